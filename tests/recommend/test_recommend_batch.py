"""``aiforge batch`` on a recommender: an interaction log grouped per user, and a file of requests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from recommend_helpers import RecBundle

from aiforge.bundle.registry import Registry
from aiforge.bundle.runtime import Runtime
from aiforge.scale.batch import batch


def _outputs(folder: Path) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "predictions.parquet")
    frame["items"] = [[r["item"] for r in json.loads(o)] for o in frame["output"]]
    return frame


def test_an_interaction_log_gets_one_ranking_per_user_and_its_bad_rows_rejected(
        rec_bundle: RecBundle, tmp_path: Path) -> None:
    ratings = pd.read_csv(rec_bundle.ratings, dtype=str)
    users = list(dict.fromkeys(ratings["userId"]))[:20]
    log = ratings[ratings["userId"].isin(users)].groupby("userId", sort=False).head(3)[["userId", "movieId"]]
    log = pd.concat([log, pd.DataFrame({"userId": ["new-user", "new-user", "", users[0]],
                                        "movieId": [log["movieId"].iloc[0], log["movieId"].iloc[1],
                                                    log["movieId"].iloc[2], "no-such-movie"]})],
                    ignore_index=True)
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)

    result = batch("ml-slice", input=path, output=tmp_path / "out", home=rec_bundle.home, progress=False)

    assert (result.rows, result.predictions, result.rejects) == (len(log), len(users) + 1, 2)
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["error"]) for r in rejects] == [
        (len(log) - 1, "no 'userId'"), (len(log), "unknown item 'no-such-movie' (not in the bundle's catalogue)")]
    assert all(r["file"] == str(path) for r in rejects)
    out = _outputs(tmp_path / "out")
    assert out["userId"].tolist() == [*users, "new-user"]
    rt = Runtime.load(Registry(rec_bundle.home).resolve("ml-slice"))
    good = log.iloc[:-2]
    for user, items in zip(out["userId"], out["items"], strict=True):
        liked = good.loc[good["userId"] == user, "movieId"].tolist()
        expected = rt.recommend(user, items=liked, k=10)  # what POST /recommend answers for the same request
        assert items == [r["item"] for r in expected["recommendations"]]
        assert len(items) == 10 and not set(items) & set(liked)


def test_a_file_of_requests_gets_a_ranking_per_row_and_a_bad_request_is_a_reject(
        rec_bundle: RecBundle, tmp_path: Path) -> None:
    ratings = pd.read_csv(rec_bundle.ratings, dtype=str)
    movies = list(dict.fromkeys(ratings["movieId"]))
    path = tmp_path / "requests.csv"
    pd.DataFrame({"id": ["a", "b", "c", "d"], "user": [ratings["userId"].iloc[0], "", "", ""],
                  "items": ["", f"{movies[0]}|{movies[1]}", "no-such-movie", ""],
                  "k": ["5", "3", "3", "0"]}).to_csv(path, index=False)

    result = batch("ml-slice", input=path, output=tmp_path / "out", home=rec_bundle.home, progress=False)

    assert (result.predictions, result.rejects) == (2, 2)
    out = _outputs(tmp_path / "out")
    assert out["id"].tolist() == ["a", "b"] and [len(i) for i in out["items"]] == [5, 3]
    rejects = {r["id"]: r["error"] for r in map(json.loads, (tmp_path / "out" / "rejects.jsonl").open())}
    assert "unknown item 'no-such-movie'" in rejects["c"] and "k: expected an integer from 1" in rejects["d"]
