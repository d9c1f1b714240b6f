"""Recommenders: scoring parts shared by training, evaluation and the exported ONNX graph."""

from aiforge.recommend.scoring import ScoringParts, score_rows, top_k

__all__ = ["ScoringParts", "score_rows", "top_k"]
