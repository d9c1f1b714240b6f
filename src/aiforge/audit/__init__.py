"""Evaluation, audit and release gates for every kind.

``metrics`` (numpy classification metrics), ``fairness`` (per-group audits), ``gates`` (the typed
gates block and the gate table), ``report`` (what eval and audit print), ``checks`` (eval and
audit dispatched to a kind's checks row) and ``ship`` (gates checked, then promotion).
"""

from aiforge.audit.metrics import Metrics, classification_metrics

__all__ = ["Metrics", "classification_metrics"]
