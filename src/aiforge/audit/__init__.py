"""Evaluation and audit: metrics now; per-group fairness and gates later."""

from aiforge.audit.metrics import Metrics, classification_metrics

__all__ = ["Metrics", "classification_metrics"]
