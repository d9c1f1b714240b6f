"""TabularSpec: the ``aiforge.yaml`` schema of ``task: tabular-classification`` (no torch here)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from aiforge.audit.gates import ReleaseGates
from aiforge.spec import BaseSpec, DataPath, Strict

__all__ = ["AuditSpec", "DerivedFeature", "FeatureSpec", "GateSpec", "MitigationSpec", "TabularDataSpec",
           "TabularModelSpec", "TabularSpec"]


Method = Literal["none", "reweighing", "exponentiated_gradient", "threshold_optimizer"]


Constraint = Literal["demographic_parity", "equalized_odds"]


class TabularDataSpec(Strict):
    """Train/test tables (or a bundled sample), the label and the sensitive features."""

    sample: Literal["adult", "compas", "german"] | None = None
    train: DataPath | None = None
    test: DataPath | None = None
    format: Literal["auto", "csv", "parquet"] = "auto"
    label: str | None = None
    positive_label: str | None = None
    sensitive_features: list[str] | None = None
    validation_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)  # held out when no data.test is given
    max_rows: int | None = Field(default=None, gt=10)

    @model_validator(mode="after")
    def _one_source(self) -> TabularDataSpec:
        if (self.sample is None) == (self.train is None):
            raise ValueError("give either data.sample (adult, compas, german) or data.train, not both")
        if self.sample is None and self.label is None:
            raise ValueError("data.label is required with data.train")
        if self.test is not None and self.test == self.train:
            raise ValueError("data.test must not be the same file as data.train")
        return self


class DerivedFeature(Strict):
    """A numeric feature computed from others (same code in training and serving)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    op: Literal["log1p", "difference", "ratio", "sum", "product"]
    columns: list[str] = Field(min_length=1, max_length=2)


class FeatureSpec(Strict):
    """Which columns feed the model and how each is treated."""

    drop: list[str] = Field(default_factory=list)
    numeric: list[str] | None = None
    categorical: list[str] | None = None
    use_sensitive: bool = False
    derived: list[DerivedFeature] = Field(default_factory=list)


class TabularModelSpec(Strict):
    """Candidate models; the best on the validation split is refit on all training rows."""

    candidates: list[Literal["logistic", "hist_gradient_boosting"]] = Field(
        default=["logistic", "hist_gradient_boosting"], min_length=1)
    select_by: Literal["accuracy", "balanced_accuracy", "roc_auc"] = "accuracy"
    seed: int = 0
    max_iter: int = Field(default=300, gt=0, le=5000)


Target = Literal["demographic_parity_difference", "equalized_odds_difference"]


class MitigationSpec(Strict):
    """Bias mitigations to try; the rule below picks which one (or "none") the bundle ships.

    ``candidates`` (``method`` and ``compare`` are the older spelling, merged into it) are each
    fitted, and with "none" measured on the validation rows. Shipped: the candidate best on
    ``target`` (default: the gap ``constraint`` names) among those that improve on "none", lose
    at most ``max_accuracy_loss`` accuracy and worsen no other fairness gap (DP, EO) by more than
    ``max_side_effect``; if none qualifies, "none", and the card says why. ``pick: first`` ships
    the first candidate whatever the rule says (the card then says what the rule would have picked).

    ``eps`` and ``max_iter`` tune ExponentiatedGradient; ``tolerance`` relaxes ThresholdOptimizer's
    demographic parity constraint (fairlearn's ``tol``) to buy back accuracy.
    """

    candidates: list[Method] = Field(default_factory=list)
    method: Method | None = None
    compare: list[Method] = Field(default_factory=list)
    pick: Literal["best", "first"] = "best"
    target: Target | None = None
    max_accuracy_loss: float = Field(default=0.02, ge=0, le=1)
    max_side_effect: float = Field(default=0.02, ge=0, le=1)
    constraint: Constraint = "demographic_parity"
    sensitive_feature: str | None = None
    eps: float = Field(default=0.01, gt=0)
    max_iter: int = Field(default=20, gt=0, le=200)
    tolerance: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, raw: Any) -> Any:
        # ``mitigation: reweighing`` or ``mitigation: [reweighing, threshold_optimizer]``
        if isinstance(raw, str):
            return {"candidates": [raw]}
        if isinstance(raw, list):
            return {"candidates": raw}
        return raw

    @model_validator(mode="after")
    def _tolerance_needs_dp(self) -> MitigationSpec:
        if self.tolerance is not None and self.constraint != "demographic_parity":
            raise ValueError("audit.mitigation.tolerance (the threshold optimizer's allowed demographic parity "
                             "difference) works only with constraint: demographic_parity")
        return self

    @property
    def methods(self) -> list[str]:
        """The candidate methods in order (``method``, ``candidates``, ``compare``), "none" left out."""
        listed = [*([self.method] if self.method else []), *self.candidates, *self.compare]
        return [m for m in dict.fromkeys(listed) if m != "none"]

    @property
    def targeted(self) -> str:
        """The fairness gap the choice minimises."""
        return self.target or ("demographic_parity_difference" if self.constraint == "demographic_parity"
                               else "equalized_odds_difference")


class AuditSpec(Strict):
    """Per-group fairness audit settings."""

    min_group_size: int = Field(default=30, gt=0)
    bootstrap: int = Field(default=200, ge=0, le=5000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    intersections: bool = True
    mitigation: MitigationSpec = MitigationSpec()


class GateSpec(ReleaseGates):
    """Release gates ``aiforge ship`` checks; unset ones are not checked.

    ``sensitive_features`` is a setting, not a gate: the features the fairness gates run on.
    ``decide`` and ``allow_undecided`` (every kind's) say how intervals decide a gate.
    """

    kind: ClassVar[str] = "tabular-classification"
    settings: ClassVar[frozenset[str]] = frozenset({"sensitive_features"})

    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_roc_auc: float | None = Field(default=None, ge=0, le=1)
    max_demographic_parity_difference: float | None = Field(default=None, ge=0, le=1)
    max_equalized_odds_difference: float | None = Field(default=None, ge=0, le=1)
    four_fifths: bool = False
    sensitive_features: list[str] | None = None


class TabularSpec(BaseSpec):
    """A tabular binary classifier with a fairness audit, mitigation and release gates."""

    task: Literal["tabular-classification"] = "tabular-classification"
    data: TabularDataSpec
    features: FeatureSpec = FeatureSpec()
    model: TabularModelSpec = TabularModelSpec()
    audit: AuditSpec = AuditSpec()
    gates: GateSpec = GateSpec()

    @model_validator(mode="after")
    def _check_names(self) -> TabularSpec:
        sens = self.data.sensitive_features or []
        m = self.audit.mitigation
        if m.sensitive_feature is not None and self.data.sensitive_features is not None \
                and m.sensitive_feature not in sens:
            raise ValueError(f"audit.mitigation.sensitive_feature {m.sensitive_feature!r} is not one of "
                             f"data.sensitive_features {sens}")
        if "exponentiated_gradient" in m.methods and self.model.candidates == ["hist_gradient_boosting"] \
                and m.max_iter > 50:
            raise ValueError("audit.mitigation.max_iter above 50 with gradient-boosted trees is too slow; lower it")
        return self
