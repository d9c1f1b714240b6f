"""Ranking and popularity-bias metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import sparse

from aiforge.tasks.recommend.metrics import gini, ranking_metrics


def test_precision_recall_ndcg_map_hit_by_hand() -> None:
    recs = np.array([[0, 1, 2], [3, 4, 5], [0, 2, 4]])
    truth = sparse.csr_matrix(np.array([
        [0, 1, 0, 0, 0, 0, 0, 1],  # hit at rank 2; item 7 never recommended
        [0, 0, 0, 0, 0, 0, 0, 0],  # no held-out positive: not evaluated
        [1, 0, 0, 0, 1, 0, 0, 0],  # hits at ranks 1 and 3
    ]))
    pop = np.array([5, 4, 3, 2, 1, 0, 0, 0], dtype=float)
    m = ranking_metrics(recs, truth, k=3, popularity=pop, n_users_train=10)
    assert m.users == 2
    assert m.precision == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert m.recall == pytest.approx((1 / 2 + 2 / 2) / 2)
    d = [1 / math.log2(r + 1) for r in (1, 2, 3)]
    assert m.ndcg == pytest.approx((d[1] / (d[0] + d[1]) + (d[0] + d[2]) / (d[0] + d[1])) / 2)
    assert m.map == pytest.approx(((1 / 2) / 2 + (1 + 2 / 3) / 2) / 2)
    assert m.hit_rate == 1.0
    assert m.coverage == pytest.approx(4 / 8)  # items 0, 1, 2, 4 (user 1 is not evaluated)
    assert m.avg_popularity == pytest.approx(np.mean([5, 4, 3, 5, 3, 1]) / 10)
    # short head: item 0 alone holds 5/15 >= 20% of positives; 4 of the 6 slots are long tail
    assert m.long_tail_share == pytest.approx(4 / 6)


def test_gini_of_exposure() -> None:
    assert gini(np.array([3, 3, 3, 3])) == pytest.approx(0.0)
    assert gini(np.array([0, 0, 0, 10])) == pytest.approx(0.75)  # (n-1)/n for one item
    assert 0 < gini(np.array([1, 2, 3, 10])) < 0.75
    assert gini(np.zeros(5)) == 0.0
