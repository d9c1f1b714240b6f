"""Model cards in the Hugging Face layout, written from what a fit measured."""

from __future__ import annotations

from typing import Any

from aiforge.hub.catalog import Backbone

__all__ = ["out_of_scope_card", "text_classifier_card"]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def text_classifier_card(*, name: str, backbone: Backbone, mode: str, labels: list[str],
                         data: dict[str, Any], metrics: dict[str, Any], parity: dict[str, Any],
                         train_seconds: float, groups: bool = False) -> str:
    """The ``card.md`` of a text-classification bundle."""
    test = metrics.get("test") or {}
    val = metrics.get("validation") or {}
    shown = ", ".join(labels[:20]) + (f", … ({len(labels)} in all)" if len(labels) > 20 else "")
    front = "\n".join([
        "---",
        f"license: {backbone.licence.lower()}",
        "library_name: aiforge",
        "pipeline_tag: text-classification",
        "tags: [aiforge, onnx, intent-detection]",
        "---",
    ])
    if "int8_ok" in parity:
        shipped = f"shipped, recipe {parity.get('int8_recipe')}" if parity["int8_ok"] else "below limit: not shipped"
        cpu = parity.get("int8_cpu") or {}
        sums = "saturate in pairs" if cpu.get("u8s8_saturates") else "are exact"
        where = f"; measured on a CPU whose int8 sums {sums} ({cpu.get('isa')})" if cpu.get("isa") else ""
        int8 = f"int8 top-1 agreement with fp32: {_pct(parity.get('int8_top1_agreement'))} ({shipped}{where})"
    else:
        int8 = "int8: not produced (optimize.quantize is off)"
    diff = parity.get("fp32_vs_torch_max_abs_prob_diff", float("nan"))
    limit = parity.get("fp32_max_abs_prob_diff_limit", float("nan"))
    return f"""{front}

# {name}

A text classifier (intent detector) built by aiforge: the pre-trained `{backbone.name}` sentence
encoder with a classification head, adapted in `{mode}` mode and exported to ONNX.

## Intended use
Assign one of {len(labels)} labels to a short text, such as a customer-service query. Labels: {shown}.

Out of scope: texts in other languages than the training data, labels not in this list (the model
always picks one of its labels; use the score to route low-confidence texts to a person), long
documents (inputs are truncated to the configured token length), and decisions about people
without human review.

## Training data
- Train: `{data.get('train')}` ({data.get('n_train')} examples after the validation split)
- Validation: `{data.get('validation')}` ({data.get('n_validation')} examples)
- Test: `{data.get('test') or 'none given'}` ({data.get('n_test') or 0} examples)

## Model
- Backbone: `{backbone.name}` — {backbone.provenance}. Licence of the backbone: {backbone.licence}.
- Adaptation: `{mode}` ({'frozen encoder, trained head' if mode == 'head' else 'encoder and head fine-tuned'}),
  trained in {train_seconds:.0f} s on CPU.

## Evaluation
| split | accuracy | macro-F1 | top-5 accuracy |
|---|---|---|---|
| validation | {_pct(val.get('accuracy'))} | {_pct(val.get('macro_f1'))} | {_pct(val.get('top5_accuracy'))} |
| test | {_pct(test.get('accuracy'))} | {_pct(test.get('macro_f1'))} | {_pct(test.get('top5_accuracy'))} |

Per-class precision, recall and F1 and the confusion matrix are in `metrics.json`.

## Export and parity
- fp32 ONNX vs PyTorch, max absolute probability difference: {diff:.2e}
  (limit {limit:.0e}) on {parity.get('samples')} texts.
- {int8}; int8 accuracy {_pct(parity.get('int8_accuracy'))} vs fp32 {_pct(parity.get('fp32_accuracy'))}.

## Limitations and bias
The encoder was pre-trained on English web text and inherits its biases; accuracy on dialects,
misspellings and domains unlike the training data is not measured here. Scores are softmax
probabilities and are not calibrated. {_groups_line(groups)}
"""


def _groups_line(groups: bool) -> str:
    if groups:
        return "Per-group accuracy, macro-F1, TPR and FPR are below (\"Per-group audit\")."
    return ("No per-group fairness audit was run: name group columns in data.sensitive_features to add one "
            "(or run `aiforge audit BUNDLE --data FILE --sensitive COLUMN`).")


def out_of_scope_card(oos: dict[str, Any], name: str) -> str:
    """The card's out-of-scope section: the threshold, how it was chosen, in-scope accuracy and OOS recall."""
    cal = oos.get("calibration", {})
    rows = []
    for part in ("validation", "test"):
        m = oos.get(part)
        if m:
            rows.append(f"| {part} | {m['in_scope']} | {m['out_of_scope']} | {_pct(m['in_scope_accuracy'])} | "
                        f"{_pct(m['in_scope_accuracy_without_rejection'])} | {_pct(m['out_of_scope_recall'])} |")
    table = "\n".join(rows)
    return f"""
## Out of scope
A text whose out-of-scope score ({_oos_score(oos)}) is above {oos['threshold']:.3f} gets the label `{name}`
(flagged `out_of_scope: true` by the server). The threshold was
{cal.get('chosen', 'calibrated')}: {cal.get('method', '')} (validation split). In-scope accuracy counts an in-scope
text as right only when it is accepted and labelled correctly.

| split | in-scope texts | out-of-scope texts | in-scope accuracy | without rejection | out-of-scope recall |
|---|---|---|---|---|---|
{table}

The whole in-scope/out-of-scope trade-off on validation is in `metrics.json` (`out_of_scope.calibration.curve`).
"""


def _oos_score(oos: dict[str, Any]) -> str:
    if oos.get("method") == "distance":
        return "squared Mahalanobis distance of the pooled features to the nearest label mean"
    if oos.get("method") == "nearest":
        return "one minus the cosine of the pooled features to the nearest training example"
    return "minus the top class probability"
