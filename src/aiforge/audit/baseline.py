"""The simple baseline every fit is compared with, and the paired bootstrap that says whether the model beats it.

Each kind fits its own baselines (majority class, TF-IDF + linear SVM, raw pixels,
popularity, ...) on the training split in the same run and scores them on validation and on
the same test items as the model. This module holds what is shared: the record of one baseline
(:class:`BaselineResult`), the choice of the best one *on validation* (never test), the paired
bootstrap interval of the test difference model - best baseline (:func:`paired_bootstrap`), the
warning when the model does not beat the baseline by more than the test set's noise, and the
``min_margin_over_baseline`` gate's decision (:func:`margin_verdict`).

numpy only, so ``aiforge ship`` can judge the gate beside the torch-free Runtime.
"""

from __future__ import annotations

import html
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

__all__ = ["BaselineReport", "BaselineResult", "Features", "Interval", "MarginVerdict", "baseline_html",
           "classifier_baselines", "compare_with_baselines", "majority_baseline", "margin_verdict",
           "paired_bootstrap", "scored_baseline", "skipped_report", "stratified_subsample", "subsample"]

SKIPPED_BY_SPEC = "baseline: false in the spec"


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval of the mean paired difference."""

    low: float
    high: float
    confidence: float
    resamples: int


def paired_bootstrap(model_scores: np.ndarray, baseline_scores: np.ndarray, *, resamples: int = 2000,
                     confidence: float = 0.95, seed: int = 0) -> Interval:
    """Percentile interval of mean(model - baseline), resampling the same items for both (paired).

    ``model_scores`` and ``baseline_scores`` hold one score per test item (1/0 correct for
    accuracy, per-user NDCG for rankings), in the same item order.

    Raises:
        ValueError: the two arrays differ in length or are empty.
    """
    a, b = np.asarray(model_scores, dtype=np.float64), np.asarray(baseline_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired scores need two 1-D arrays of the same non-zero length, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    n = len(diff)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // n)  # bound the index matrix to ~16 MB
    for start in range(0, resamples, step):
        stop = min(start + step, resamples)
        means[start:stop] = diff[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(float(low), float(high), confidence, resamples)


@dataclass(frozen=True)
class BaselineResult:
    """One baseline, fitted on the training split: its score on validation and on test, and its wall time.

    ``test_scores`` (per test item, same order as the model's) feeds the paired bootstrap and
    is not written to JSON.
    """

    name: str
    metric: str
    validation: float | None
    test: float | None
    seconds: float
    skipped: bool = False
    reason: str = ""
    test_scores: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the per-item scores)."""
        return {"name": self.name, "metric": self.metric, "validation": self.validation, "test": self.test,
                "seconds": self.seconds, "skipped": self.skipped, "reason": self.reason}


@dataclass(frozen=True)
class BaselineReport:
    """The model against the best baseline (chosen on validation) on the same test items.

    ``difference`` is model - baseline on test and ``interval`` its paired bootstrap interval;
    ``warning`` is set when the interval's lower end is not above zero (the model does not beat
    the baseline by more than the test set's noise), ``hint`` says what to try then.
    """

    metric: str
    model_validation: float | None = None
    model_test: float | None = None
    best: str | None = None
    baseline_validation: float | None = None
    baseline_test: float | None = None
    difference: float | None = None
    interval: tuple[float, float] | None = None
    confidence: float = 0.95
    n: int = 0
    seconds: float = 0.0
    fit_seconds: float = 0.0
    candidates: list[BaselineResult] = field(default_factory=list)
    skipped: bool = False
    reason: str = ""
    warning: str = ""
    hint: str = ""

    @property
    def beats(self) -> bool | None:
        """Whether the model beats the best baseline beyond the noise (``None`` when not measured)."""
        return None if self.interval is None else self.interval[0] > 0

    def to_dict(self) -> dict[str, Any]:
        """The ``baseline`` section of ``metrics.json`` and of the manifest."""
        return {"metric": self.metric, "split": "test", "skipped": self.skipped, "reason": self.reason,
                "model": {"validation": self.model_validation, "test": self.model_test},
                "best": self.best, "baseline": {"validation": self.baseline_validation, "test": self.baseline_test},
                "difference": self.difference, "interval": list(self.interval) if self.interval else None,
                "confidence": self.confidence, "n": self.n, "beats_baseline": self.beats,
                "seconds": self.seconds, "fit_seconds": self.fit_seconds,
                "candidates": [c.to_dict() for c in self.candidates], "warning": self.warning, "hint": self.hint}

    def lines(self) -> list[str]:
        """The plain-text lines a summary or a card shows under the table."""
        if self.skipped:
            return [f"baseline: skipped ({self.reason})"]
        out = []
        if self.difference is not None and self.interval is not None:
            pct = round(self.confidence * 100)
            out.append(f"model - best baseline ({self.best}) on {self.n} test items: {self.metric} "
                       f"{self.difference:+.4f} ({pct}% paired bootstrap CI {self.interval[0]:+.4f} to "
                       f"{self.interval[1]:+.4f}); baselines took {self.seconds:.1f} s "
                       f"({_share(self.seconds, self.fit_seconds)} of the fit's {self.fit_seconds:.1f} s)")
        elif self.best is not None:
            out.append(f"best baseline on validation: {self.best} (no test split, so no interval)")
        if self.warning:
            out.append(f"WARNING: {self.warning}")
        if self.hint:
            out.append(f"hint: {self.hint}")
        return out

    def html(self) -> str:
        """The report.html "Baseline" section (:func:`baseline_html` of :meth:`to_dict`)."""
        return baseline_html(self.to_dict())

    def markdown(self) -> str:
        """The card's "Baseline" section."""
        if self.skipped:
            return f"## Baseline\n\nSkipped ({self.reason}).\n"
        rows = ["| | validation | test | wall s |", "|---|---|---|---|",
                f"| model | {_fmt(self.model_validation)} | {_fmt(self.model_test)} | {self.fit_seconds:.1f} |"]
        for c in self.candidates:
            mark = " (best on validation)" if c.name == self.best else ""
            cells = ("skipped", c.reason, "") if c.skipped else (_fmt(c.validation), _fmt(c.test), f"{c.seconds:.1f}")
            rows.append(f"| baseline: {c.name}{mark} | " + " | ".join(cells) + " |")
        body = "\n".join(rows)
        notes = "\n".join(f"- {line}" for line in self.lines())
        return f"## Baseline ({self.metric})\n\n{body}\n\n{notes}\n"


def baseline_html(baseline: Mapping[str, Any] | None) -> str:
    """The report.html "Baseline" section from a stored ``baseline`` section (``BaselineReport.to_dict()``).

    A table of the model and every baseline (validation, test, wall seconds), the difference with
    its interval and the warning and hint, every text escaped; empty when there is no section.
    """
    if not baseline:
        return ""
    if baseline.get("skipped"):
        return f"<h2>Baseline</h2><p>Skipped ({html.escape(str(baseline.get('reason', '')))}).</p>"
    model = baseline.get("model") or {}
    best = baseline.get("best")
    rows = [f"<tr><td>model</td><td>{_fmt(model.get('validation'))}</td><td>{_fmt(model.get('test'))}</td>"
            f"<td>{float(baseline.get('fit_seconds') or 0.0):.1f}</td></tr>"]
    for c in baseline.get("candidates") or []:
        mark = " (best on validation)" if c.get("name") == best else ""
        cells = (f"<td>skipped</td><td colspan='2'>{html.escape(str(c.get('reason', '')))}</td>" if c.get("skipped")
                 else f"<td>{_fmt(c.get('validation'))}</td><td>{_fmt(c.get('test'))}</td>"
                      f"<td>{float(c.get('seconds') or 0.0):.1f}</td>")
        rows.append(f"<tr><td>baseline: {html.escape(str(c.get('name')))}{mark}</td>{cells}</tr>")
    metric = html.escape(str(baseline.get("metric", "")))
    notes = []
    iv, diff = baseline.get("interval"), baseline.get("difference")
    if iv and diff is not None:
        pct = round(float(baseline.get("confidence", 0.95)) * 100)
        share = _share(float(baseline.get("seconds") or 0.0), float(baseline.get("fit_seconds") or 0.0))
        notes.append(f"<p>model − best baseline ({html.escape(str(best))}) on {int(baseline.get('n', 0))} test "
                     f"items: {metric} <b>{float(diff):+.4f}</b> ({pct}% paired bootstrap CI {float(iv[0]):+.4f} "
                     f"to {float(iv[1]):+.4f}); the baselines took {float(baseline.get('seconds') or 0.0):.1f} s "
                     f"({share} of the fit).</p>")
    if baseline.get("warning"):
        notes.append(f"<p class='warn' style='color:#b00'><b>Warning:</b> {html.escape(str(baseline['warning']))}</p>")
    if baseline.get("hint"):
        notes.append(f"<p>Hint: {html.escape(str(baseline['hint']))}</p>")
    return (f"<h2>Baseline ({metric}; best chosen on validation)</h2><table><tr><th></th><th>validation</th>"
            f"<th>test</th><th>wall s</th></tr>{''.join(rows)}</table>{''.join(notes)}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "n/a"


def skipped_report(metric: str, reason: str = SKIPPED_BY_SPEC) -> BaselineReport:
    """The report of a fit whose baseline was not run."""
    return BaselineReport(metric=metric, skipped=True, reason=reason)


class Estimator(Protocol):
    """What a baseline model needs: scikit-learn's fit and predict."""

    def fit(self, x: Any, y: Any) -> Any: ...

    def predict(self, x: Any) -> Any: ...


def _accuracy_scores(truth: Sequence[Any] | np.ndarray, pred: Sequence[Any] | np.ndarray) -> np.ndarray:
    scores: np.ndarray = (np.asarray(pred) == np.asarray(truth)).astype(np.float64)
    return scores


def majority_baseline(train_labels: Sequence[Any], validation_labels: Sequence[Any],
                      test_labels: Sequence[Any] | None) -> BaselineResult:
    """Always predict the most frequent training label; accuracy on validation and test."""
    start = time.perf_counter()
    values, counts = np.unique(np.asarray(list(train_labels)), return_counts=True)
    top = values[int(np.argmax(counts))]
    val = _accuracy_scores(validation_labels, np.full(len(validation_labels), top))
    test = _accuracy_scores(test_labels, np.full(len(test_labels), top)) if test_labels is not None else None
    return BaselineResult("majority class", "accuracy", float(val.mean()) if len(val) else None,
                          float(test.mean()) if test is not None and len(test) else None,
                          time.perf_counter() - start, test_scores=test)


def scored_baseline(name: str, estimator: Estimator, *, x_train: Any, y_train: Any, x_validation: Any,
                    y_validation: Any, x_test: Any | None, y_test: Any | None) -> BaselineResult:
    """Fit ``estimator`` on the training split, score its accuracy on validation and test.

    Convergence warnings are silenced: a baseline capped at a few hundred iterations is still
    the baseline the model must beat. A baseline that fails to fit is reported as skipped.
    """
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(x_train, y_train)
            val = _accuracy_scores(y_validation, estimator.predict(x_validation))
            test = (_accuracy_scores(y_test, estimator.predict(x_test))
                    if x_test is not None and y_test is not None else None)
    except (ValueError, MemoryError) as exc:
        return BaselineResult(name, "accuracy", None, None, time.perf_counter() - start, skipped=True,
                              reason=f"could not fit: {exc}")
    return BaselineResult(name, "accuracy", float(val.mean()), float(test.mean()) if test is not None else None,
                          time.perf_counter() - start, test_scores=test)


def subsample(n: int, limit: int, *, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` of ``n`` items (all of them when ``n <= limit``), seeded."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def stratified_subsample(labels: Sequence[Any] | np.ndarray, limit: int, *, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` items keeping each label's share (all of them when fewer), seeded.

    Each item gets a random rank within its label; the ``limit`` items of smallest rank / label
    count are kept, so every label keeps about ``limit / n`` of its items (and a rare label at
    least its first one).
    """
    y = np.asarray(labels)
    n = len(y)
    if n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    order = np.lexsort((rng.random(n), codes))  # by label, in random order within each label
    rank = np.empty(n, dtype=np.float64)
    rank[order] = np.arange(n) - (np.cumsum(counts) - counts)[codes[order]]
    key = rank / counts[codes]
    return np.sort(np.argsort(key, kind="stable")[:limit])


Features = Callable[[str, np.ndarray | None], Any]
"""A kind's baseline features: ``features(split, indices)`` for split "train", "validation" or "test";
``indices`` selects training items (``None``: the whole split)."""


def classifier_baselines(*, estimators: Sequence[tuple[str, Estimator]], features: Features,
                         train_labels: Sequence[Any], validation_labels: Sequence[Any],
                         test_labels: Sequence[Any] | None, max_train: int, model_validation: float | None,
                         model_test: float | None, model_test_scores: np.ndarray | None, fit_seconds: float,
                         hint: str, seed: int, enabled: bool = True) -> BaselineReport:
    """Majority class and each ``(name, estimator)`` on the kind's ``features``, against the model (accuracy).

    The one skeleton every classifier kind shares: a stratified, seeded sample of at most
    ``max_train`` training items (so the cost is bounded by construction), features built once
    per split, every estimator fitted on the sample, the best chosen on validation and compared
    with the model on the same test items (:func:`compare_with_baselines`). The kinds keep only
    their feature code and their estimators. ``enabled=False`` (``baseline: false``) skips it.
    """
    if not enabled:
        return skipped_report("accuracy")
    start = time.perf_counter()
    keep = stratified_subsample(train_labels, max_train, seed=seed)
    y_train = np.asarray(train_labels)[keep]
    x_train, x_validation = features("train", keep), features("validation", None)
    x_test = features("test", None) if test_labels is not None else None
    candidates = [majority_baseline(y_train.tolist(), validation_labels, test_labels)]
    candidates += [scored_baseline(name, estimator, x_train=x_train, y_train=y_train, x_validation=x_validation,
                                   y_validation=validation_labels, x_test=x_test, y_test=test_labels)
                   for name, estimator in estimators]
    return compare_with_baselines(metric="accuracy", candidates=candidates, model_validation=model_validation,
                                  model_test=model_test, model_test_scores=model_test_scores,
                                  fit_seconds=fit_seconds, hint=hint, seed=seed,
                                  seconds=time.perf_counter() - start)


def compare_with_baselines(*, metric: str, candidates: Sequence[BaselineResult], model_validation: float | None,
                           model_test: float | None, model_test_scores: np.ndarray | None, fit_seconds: float,
                           hint: str, seed: int = 0, resamples: int = 2000,
                           seconds: float | None = None) -> BaselineReport:
    """Pick the best baseline on validation, then compare it with the model on the same test items.

    A baseline without a validation score is never chosen; with no usable baseline the report is
    a skipped one naming why. The warning (and ``hint``) is set when the paired interval of the
    test difference does not lie above zero. ``seconds`` is the baselines' whole wall time
    (features included); by default the sum of the candidates' times.
    """
    usable = [c for c in candidates if not c.skipped and c.validation is not None]
    seconds = float(sum(c.seconds for c in candidates)) if seconds is None else seconds
    if not usable:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in candidates) or "no baseline applies"
        return BaselineReport(metric=metric, skipped=True, reason=reasons, seconds=seconds, fit_seconds=fit_seconds,
                              candidates=list(candidates), model_validation=model_validation, model_test=model_test)
    best = max(usable, key=lambda c: float(c.validation or 0.0))  # first on ties: the simplest is listed first
    report = BaselineReport(metric=metric, model_validation=model_validation, model_test=model_test, best=best.name,
                            baseline_validation=best.validation, baseline_test=best.test, seconds=seconds,
                            fit_seconds=fit_seconds, candidates=list(candidates))
    if model_test_scores is None or best.test_scores is None:
        return report
    interval = paired_bootstrap(model_test_scores, best.test_scores, resamples=resamples, seed=seed)
    difference = float(np.mean(model_test_scores) - np.mean(best.test_scores))
    warning = hint_text = ""
    if interval.low <= 0:
        warning = (f"the model does not beat the best baseline ({best.name}: {metric} {best.test:.4f} on test) "
                   f"by more than the test set's noise: model - baseline {difference:+.4f}, "
                   f"{round(interval.confidence * 100)}% CI {interval.low:+.4f} to {interval.high:+.4f}")
        hint_text = hint
    return BaselineReport(metric=metric, model_validation=model_validation, model_test=model_test, best=best.name,
                          baseline_validation=best.validation, baseline_test=best.test, difference=difference,
                          interval=(interval.low, interval.high), confidence=interval.confidence,
                          n=len(model_test_scores), seconds=seconds, fit_seconds=fit_seconds,
                          candidates=list(candidates), warning=warning, hint=hint_text)


@dataclass(frozen=True)
class MarginVerdict:
    """The ``min_margin_over_baseline`` gate: the interval's lower end, pass/fail and why."""

    lower: float | None
    passed: bool
    note: str


def margin_verdict(baseline: Mapping[str, Any] | None, margin: float) -> MarginVerdict:
    """Decide ``min_margin_over_baseline`` from a stored ``baseline`` section, with its interval.

    Passes when the interval's lower end is at least ``margin``; fails "below" when its upper end
    is under ``margin``, and "undecided" when the interval straddles it (the test set is too small
    to tell). A skipped or unmeasured baseline fails, naming why.
    """
    if not baseline:
        return MarginVerdict(None, False, "no baseline stored in the bundle (exported before baselines existed); "
                                          "re-train it to measure one")
    if baseline.get("skipped"):
        return MarginVerdict(None, False, f"baseline was skipped ({baseline.get('reason', '')}); "
                                          "set baseline: true in the spec to measure it")
    iv, diff = baseline.get("interval"), baseline.get("difference")
    if not iv or diff is None:
        return MarginVerdict(None, False, "no test split, so no interval of the difference to judge the margin on")
    low, high = float(iv[0]), float(iv[1])
    what = (f"model - {baseline.get('best')} {baseline.get('metric')} {float(diff):+.4f} "
            f"(CI {low:+.4f} to {high:+.4f})")
    if low >= margin:
        return MarginVerdict(low, True, f"{what} >= margin {margin:g}")
    if high < margin:
        return MarginVerdict(low, False, f"{what}: below margin {margin:g}")
    return MarginVerdict(low, False, f"undecided: {what} straddles margin {margin:g}; the test set is too small "
                                     "to tell (more test items narrow the interval)")
