"""Interaction logs: checks with clear errors, implicit conversion, id maps and per-user splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aiforge.errors import DataError, SpecError
from aiforge.spec import BaseSpec
from aiforge.tasks.recommend.data import load_interactions, split_interactions, to_interactions
from aiforge.tasks.recommend.spec import InteractionColumns, ItemColumns, RecommendSpec

REPO = Path(__file__).resolve().parents[2]
COLS = InteractionColumns(user="u", item="i", rating="r", timestamp="t")
ITEMS = ItemColumns(id="i", title="title", genres="genres")


def _log(rows: list[tuple[object, ...]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["u", "i", "r", "t"]).astype(str)


def _items() -> pd.DataFrame:
    return pd.DataFrame({"i": ["a", "b", "c"], "title": ["A", "B", "C"], "genres": ["x|y", "y", "z"]})


def _convert(df: pd.DataFrame, items: pd.DataFrame | None = None, **kw: object) -> object:
    opts: dict[str, object] = {"columns": COLS, "item_columns": ITEMS, "positive_threshold": 4.0, "where": "log.csv",
                               "items_where": "items.csv", **kw}
    return to_interactions(df, items, **opts)  # type: ignore[arg-type]


def test_ratings_at_or_above_threshold_become_positives_with_id_maps() -> None:
    data = _convert(_log([("u1", "a", 5, 1), ("u1", "b", 3, 2), ("u2", "a", 4, 3), ("u2", "c", 4.5, 4)]), _items())
    assert data.n_events == 3  # the 3-star rating is dropped
    assert data.users == ["u1", "u2"] and data.items == ["a", "b", "c"]
    m = data.matrix().toarray()
    assert m.tolist() == [[1, 0, 0], [1, 0, 1]]
    assert data.metadata[0] == {"item": "a", "title": "A", "genres": ["x", "y"]}


@pytest.mark.parametrize(("rows", "items", "kw", "match"), [
    ([("u1", "a", 5, 1), ("u1", "a", 4, 2)], None, {}, r"log.csv: 2 rows repeat a \(user, item\) pair, first at row 2"),
    ([("u1", "a", 5, 1), ("", "b", 4, 2)], None, {}, r"log.csv: row 3: the user id is missing"),
    ([("u1", "a", "five", 1)], None, {}, r"log.csv: row 2: rating 'five' is not a number"),
    ([("u1", "a", 5, "yesterday")], None, {}, r"row 2: timestamp 'yesterday' is not a number"),
    ([("u1", "zz", 5, 1)], "items", {}, r"items.csv: 1 item ids in the interactions are missing from the item table"),
    ([("u1", "a", 1, 1)], None, {}, r"no positive interactions \(threshold 4.0\)"),
])
def test_bad_logs_name_the_file_row_and_fix(rows: list[tuple[object, ...]], items: str | None,
                                             kw: dict[str, object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        _convert(_log(rows), _items() if items else None, **kw)


def test_missing_column_names_the_spec_key() -> None:
    df = _log([("u1", "a", 5, 1)]).rename(columns={"r": "stars"})
    with pytest.raises(DataError, match=r"column 'r' not found. Columns are \['u', 'i', 'stars', 't'\]. Set "
                                        r"data.columns.rating"):
        _convert(df)


def test_duplicates_can_keep_the_latest_event() -> None:
    data = _convert(_log([("u1", "a", 2, 5), ("u1", "a", 5, 9), ("u1", "b", 5, 1)]), on_duplicate="keep-last")
    assert sorted(data.items[i] for i in data.item_idx) == ["a", "b"]  # the later 5-star event of a won


def test_duplicate_item_ids_in_the_item_table_are_an_error() -> None:
    items = pd.concat([_items(), _items().iloc[:1]])
    with pytest.raises(DataError, match=r"items.csv: row 5: item id 'a' appears more than once"):
        _convert(_log([("u1", "a", 5, 1)]), items)


def test_split_is_seeded_per_user_and_disjoint(make_rec_spec, ml_slice) -> None:
    spec = BaseSpec.from_dict(make_rec_spec(*ml_slice))
    assert isinstance(spec, RecommendSpec)
    data = load_interactions(spec.data)
    a = split_interactions(data, kind="random", test_fraction=0.2, validation_fraction=0.2, seed=0,
                           min_user_positives=2)
    b = split_interactions(data, kind="random", test_fraction=0.2, validation_fraction=0.2, seed=0,
                           min_user_positives=2)
    c = split_interactions(data, kind="random", test_fraction=0.2, validation_fraction=0.2, seed=1,
                           min_user_positives=2)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)
    assert not (a.train & a.test).any() and (a.train | a.test).all()
    assert not (a.fit & a.validation).any() and np.array_equal(a.fit | a.validation, a.train)
    for u in range(data.n_users):
        mine = data.user_idx == u
        n, n_test = int(mine.sum()), int((mine & a.test).sum())
        assert n_test == (max(1, round(0.2 * n)) if n >= 2 else 0)
    assert 0.18 < a.test.mean() < 0.24


def test_time_split_holds_out_each_users_latest_events(make_rec_spec, ml_slice) -> None:
    spec = BaseSpec.from_dict(make_rec_spec(*ml_slice))
    data = load_interactions(spec.data)  # type: ignore[attr-defined]
    s = split_interactions(data, kind="time", test_fraction=0.2, validation_fraction=0.2, seed=0,
                           min_user_positives=2)
    for u in range(0, data.n_users, 7):
        mine = data.user_idx == u
        if (mine & s.test).any():
            assert data.timestamp[mine & s.test].min() >= data.timestamp[mine & s.train].max()


def test_spec_errors_and_the_example_validates() -> None:
    with pytest.raises(SpecError, match=r"unknown key 'model.algoritm'. Did you mean 'algorithm'"):
        BaseSpec.from_dict({"name": "x", "task": "recommendation", "data": {"sample": "movielens"},
                            "model": {"algoritm": "ease"}})
    with pytest.raises(SpecError, match=r"exactly one of data\.interactions"):
        BaseSpec.from_dict({"name": "x", "task": "recommendation", "data": {}})
    with pytest.raises(SpecError, match=r"model\.algorithm"):
        BaseSpec.from_dict({"name": "x", "task": "recommendation", "data": {"sample": "movielens"},
                            "model": {"algorithm": "svd"}})
    spec = BaseSpec.from_yaml(REPO / "examples" / "movielens" / "aiforge.yaml")
    assert isinstance(spec, RecommendSpec) and spec.model.algorithm == "hybrid"
    data = load_interactions(spec.data.model_copy(update={"max_users": 30}))
    assert data.n_users == 30 and data.n_items == 9066  # the whole MovieLens catalogue
    assert all({"title", "genres", "year"} <= set(m) for m in data.metadata[:50])


def test_the_movielens_example_runs_on_a_slice(tmp_path: Path) -> None:
    from aiforge import App, load

    spec = BaseSpec.from_yaml(REPO / "examples" / "movielens" / "aiforge.yaml")
    assert isinstance(spec, RecommendSpec)
    small = spec.model_copy(update={
        "data": spec.data.model_copy(update={"max_users": 40}),
        "model": spec.model.model_copy(update={"algorithm": "ease", "compare": ["popularity"]}),
    })
    app = App(small, home=tmp_path)
    result = app.fit(progress=False)
    assert result.reports["ease"].test.ndcg > result.reports["popularity"].test.ndcg
    rt = load(app.export().path)
    out = rt.recommend(rt.user_ids[0], k=3)  # type: ignore[attr-defined]
    assert len(out["recommendations"]) == 3 and out["recommendations"][0]["metadata"]["title"]
