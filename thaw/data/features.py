"""Side-feature helpers shared by models: profile segments and item text."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from thaw.data.schema import Dataset

# The MovieLens-1M age groups; used for ML-100k too so segments mean the same everywhere.
AGE_BANDS = ((0, 18, "<18"), (18, 25, "18-24"), (25, 35, "25-34"), (35, 45, "35-44"),
             (45, 50, "45-49"), (50, 56, "50-55"), (56, 200, "56+"))


def age_band(age: Any) -> str | None:
    """The age group an age falls in, or None when the age is unknown."""
    try:
        value = float(age)
    except (TypeError, ValueError):
        return None
    if np.isnan(value):
        return None
    for low, high, label in AGE_BANDS:
        if low <= value < high:
            return label
    return None


def segment_key(profile: Mapping[str, Any], fields: tuple[str, ...] = ("gender", "age")) -> tuple | None:
    """A user's segment (e.g. gender and age band), or None when a field is missing."""
    key = []
    for name in fields:
        value = profile.get(name)
        if name == "age":
            value = age_band(value)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        key.append(value)
    return tuple(key)


def user_segments(data: Dataset, fields: tuple[str, ...] = ("gender", "age")) -> list[tuple | None]:
    """The segment of every user in the data set's id space."""
    if any(f not in data.user_features.columns for f in fields):
        return [None] * data.n_users
    frame = data.user_features[list(fields)]
    return [segment_key(dict(zip(fields, row, strict=True)), fields)
            for row in frame.itertuples(index=False, name=None)]


def item_documents(data: Dataset) -> list[str]:
    """One text per item from its title, genres and year, for TF-IDF content similarity.

    Genres and year become single tokens (``genre_drama``, ``year_1995``, ``decade_1990``) so
    they match exactly and never collide with title words.
    """
    features = data.item_features
    titles = features["title"] if "title" in features else pd.Series([""] * data.n_items)
    genres = features["genres"] if "genres" in features else pd.Series([()] * data.n_items)
    years = features["year"] if "year" in features else pd.Series([np.nan] * data.n_items)
    docs = []
    for title, item_genres, year in zip(titles, genres, years, strict=True):
        tokens = [str(title) if isinstance(title, str) else ""]
        if isinstance(item_genres, (tuple, list)):
            tokens += ["genre_" + g.lower().replace(" ", "_").replace("'", "").replace("-", "_")
                       for g in item_genres]
        try:
            y = int(float(year))
            tokens += [f"year_{y}", f"decade_{y // 10 * 10}"]
        except (TypeError, ValueError):
            pass
        docs.append(" ".join(tokens))
    return docs
