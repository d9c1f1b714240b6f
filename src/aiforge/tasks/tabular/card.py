"""``card.md`` of a tabular bundle, in the Hugging Face model-card layout, from the audit's numbers."""

from __future__ import annotations

from typing import Any

__all__ = ["tabular_card"]


_METHOD_TEXT = {
    "none": "none (the unmitigated model is shipped)",
    "reweighing": "pre-processing: training rows reweighed so group and label are independent (Kamiran & Calders)",
    "exponentiated_gradient": "in-processing: fairlearn ExponentiatedGradient, a weighted mixture of classifiers",
    "threshold_optimizer": "post-processing: fairlearn ThresholdOptimizer, per-group decision thresholds",
}


def _f(x: Any) -> str:
    return "n/a" if not isinstance(x, int | float) else f"{x:.4f}"


def _ci(t: dict[str, Any] | None, key: str) -> str:
    if not t:
        return "n/a"
    iv = (t.get("intervals") or {}).get(key)
    return _f(t.get(key)) + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")


def _tradeoff_rows(tradeoff: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"| {t['setting']}{' (shipped)' if t.get('shipped') else ''} | {_ci(t.get('validation'), 'accuracy')} | "
        f"{_ci(t.get('validation'), 'demographic_parity_difference')} | "
        f"{_ci(t.get('validation'), 'equalized_odds_difference')} | {_ci(t, 'accuracy')} | "
        f"{_ci(t, 'demographic_parity_difference')} | {_ci(t, 'equalized_odds_difference')} | "
        f"{t.get('verdict', '')} |" for t in tradeoff)


def tabular_card(*, spec: Any, result: Any, audit: dict[str, Any], parity: dict[str, Any],
                 metrics: dict[str, Any]) -> str:
    """The card: intended use, data provenance, model, evaluation, per-group audit, limitations."""
    data, model = result.data, result.shipped
    prov = data.provenance
    o = audit["overall"]
    cols = [c for c in result.schema.columns]
    needed = ", sensitive, required at prediction time"
    inputs = ", ".join(f"`{c.name}` ({c.kind}{needed if c.role == 'sensitive' else ''})" for c in cols)
    needs = model.method == "threshold_optimizer"
    fairness_lines = []
    for name, feat in audit["features"].items():
        if "demographic_parity_difference" not in feat:
            fairness_lines.append(f"| {name} | not judged: {feat.get('note', '')} | | | |")
            continue
        iv = feat.get("intervals", {})
        dp_ci = iv.get("demographic_parity_difference")
        ci = f" [{dp_ci[0]:.3f}, {dp_ci[1]:.3f}]" if dp_ci else ""
        ff = feat["four_fifths"]
        verdict = "passes" if ff["passes"] else "flags " + (", ".join(ff["flagged_groups"]) or "min/max ratio < 0.8")
        fairness_lines.append(
            f"| {name} | {_f(feat['demographic_parity_difference'])}{ci} | {_f(feat['demographic_parity_ratio'])} | "
            f"{_f(feat['equalized_odds_difference'])} | {verdict} |")
    small = sorted({g for f in audit["features"].values() for g in f.get("small_groups", [])})
    trade = _tradeoff_rows(metrics.get("tradeoff", []))
    choice = metrics.get("mitigation_choice") or {}
    why = choice.get("reason", "no mitigation candidates were listed")
    per_group = "; ".join(f"`{f}`: " + ", ".join(f"{g} {n}" for g, n in groups.items())
                          for f, groups in metrics.get("rows_per_group", {}).items()) or "no sensitive features"
    sensitive_note = (
        f"**This model needs the sensitive feature `{model.sensitive_feature}` at prediction time**: the "
        "post-processing mitigation applies a different threshold to each group. Requests without it are "
        f"rejected (422); allowed values: {', '.join(next(c.groups for c in cols if c.role == 'sensitive'))}. "
        "Collecting and using this attribute at decision time may be restricted by law in your setting."
        if needs else
        f"The sensitive features ({', '.join(data.sensitive_features) or 'none declared'}) are "
        + ("used as model inputs (features.use_sensitive)." if spec.features.use_sensitive
           else "not model inputs; they are used only to audit"
           + (" and to mitigate during training." if model.method != "none" else "."))
    )
    target = f" for `{model.sensitive_feature}` ({model.constraint})" if model.method != "none" else ""
    chosen = ", ".join(f"{k} {v:.4f}" for k, v in result.selection.items())
    return f"""---
license: other
library_name: aiforge
pipeline_tag: tabular-classification
tags: [aiforge, onnx, tabular-classification, fairness-audit]
---

# {spec.name}

A binary tabular classifier built by aiforge: a scikit-learn `{model.kind}` pipeline (imputation, scaling for
linear models, one-hot encoding, classifier) chosen by validation {spec.model.select_by}, with bias
mitigation **{_METHOD_TEXT[model.method]}**{target},
exported to one ONNX graph and served by the torch-free aiforge Runtime.

## Intended use
Predict `{data.label}` = `{data.labels[1]}` (positive) vs `{data.labels[0]}` from a record with the
columns below, as decision support that a person reviews. Not for fully automated decisions about
people, not for populations unlike the training data, and not as a causal explanation.

{sensitive_note}

Inputs: {inputs}. Missing numbers (null) are imputed with the training median; missing or unseen
categories are encoded as all-zero one-hot columns.

## Training data
- Source: {prov.get('source')}. {prov.get('provenance')}
- Licence: {prov.get('licence')}
- Rows: {prov.get('n_train')} train ({len(data.train)} fit, {len(data.validation)} validation),
  {prov.get('n_test')} test ({result.eval_split}{', stratified by label and sensitive group, seeded; it chose '
  'nothing' if result.eval_split.startswith('held-out') else ''}).

## Model
- Candidates and validation {spec.model.select_by}: {chosen}; chosen: `{model.kind}`.
- Decision rule: positive iff P(positive) > 0.5. Randomized fairlearn predictors are derandomized by this
  rule; the audit below measures the served, derandomized model.
- Export parity (ONNX vs scikit-learn, {parity['samples']} rows): max |Δp| {parity['max_abs_prob_diff']:.2e},
  label agreement {parity['label_agreement']:.4%}.

## Evaluation ({result.eval_split}, {metrics.get('rows')} rows, exported ONNX graph)
Model, mitigation and thresholds were chosen on train and validation rows only. Rows per group in
this split: {per_group}.

| accuracy | ROC AUC | selection rate | TPR | FPR | precision |
|---|---|---|---|---|---|
| {_f(o['accuracy'])} | {_f(o['roc_auc'])} | {_f(o['selection_rate'])} | {_f(o['tpr'])} | {_f(o['fpr'])} \
| {_f(o['precision'])} |

## Fairness audit
Per-group numbers are in `audit.json` and `report.html` (plots). Brackets: 95% bootstrap interval.

| sensitive feature | DP difference | DP ratio | EO difference | four-fifths rule |
|---|---|---|---|---|
{chr(10).join(fairness_lines)}

Groups too small to judge (fewer than {spec.audit.min_group_size} rows): {', '.join(small) or 'none'}.

### Mitigation: chosen by rule, not by the spec
{why}.

Every candidate and "none", scikit-learn side; the choice reads the validation columns only (the
threshold optimizer's are out of fold). Brackets: 95% bootstrap intervals.

| setting | val. accuracy | val. DP diff. | val. EO diff. | test accuracy | test DP diff. | test EO diff. | verdict |
|---|---|---|---|---|---|---|---|
{trade}

## Limitations and bias
Group fairness metrics compare rates between groups; they do not show that individual decisions are
fair, and improving one (demographic parity) can worsen another (equalized odds, calibration).
Labels in historical data can themselves be biased. Intervals are wide for small groups, and groups
with fewer than {spec.audit.min_group_size} rows are not judged at all. The audit covers only the
sensitive features declared in the spec.
"""
