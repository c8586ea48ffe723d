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


USER_FIELDS = ("gender", "age", "occupation", "zip_prefix")
YEAR_BIN = 5


class FeatureSpace:
    """Integer codes for side features, the inputs of every feature-based neural model.

    Users: one categorical code per field (age as its band); code 0 means unknown, including
    any value never seen on a training user, so held-out users add nothing to the vocabulary.
    Items: a multi-hot genre vector and a release-year bucket, content features known for every
    item, new ones included; and an identity code for items seen in training (0 otherwise).
    """

    def __init__(self, data: Dataset, fields: tuple[str, ...] = USER_FIELDS) -> None:
        frame = data.user_features
        self.fields = tuple(f for f in fields if f in frame.columns)
        trained = np.unique(data.interactions.user)
        self.vocab: dict[str, dict[Any, int]] = {}
        for name in self.fields:
            values = [self._value(name, v) for v in frame[name].iloc[trained]]
            known = sorted({v for v in values if v is not None}, key=str)
            self.vocab[name] = {v: i + 1 for i, v in enumerate(known)}
        self.user_codes = np.stack(
            [self.encode_profile(data.profile(u)) for u in range(data.n_users)]
        ) if self.fields else np.zeros((data.n_users, 0), dtype=np.int64)

        items = data.item_features
        genre_lists = items["genres"] if "genres" in items else pd.Series([()] * data.n_items)
        self.genres = sorted({g for gs in genre_lists if isinstance(gs, (tuple, list)) for g in gs})
        index = {g: i for i, g in enumerate(self.genres)}
        self.item_genres = np.zeros((data.n_items, max(1, len(self.genres))), dtype=np.float32)
        for i, gs in enumerate(genre_lists):
            if isinstance(gs, (tuple, list)):
                for g in gs:
                    self.item_genres[i, index[g]] = 1.0
        years = pd.to_numeric(items["year"], errors="coerce").to_numpy(dtype=float) \
            if "year" in items else np.full(data.n_items, np.nan)
        known_years = years[~np.isnan(years)]
        self.first_year = float(known_years.min()) if len(known_years) else 0.0
        buckets = np.where(np.isnan(years), -1, (np.nan_to_num(years) - self.first_year) // YEAR_BIN)
        self.item_year = (buckets + 1).astype(np.int64)  # 0 = unknown year
        # Item identity for items seen in training; every other item shares code 0, so a new
        # item is scored through its content features alone.
        trained_items = np.zeros(data.n_items, dtype=bool)
        trained_items[data.interactions.item] = True
        self.item_code = np.where(trained_items, np.arange(1, data.n_items + 1), 0).astype(np.int64)

    @staticmethod
    def _value(name: str, value: Any) -> Any:
        if name == "age":
            return age_band(value)
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return None
        return str(value)

    def encode_profile(self, profile: Mapping[str, Any]) -> np.ndarray:
        """Codes of one user's profile; unknown or missing values get 0."""
        return np.array([self.vocab[f].get(self._value(f, profile.get(f)), 0) for f in self.fields],
                        dtype=np.int64)

    def request_codes(self, user: int | None, profile: Mapping[str, Any]) -> np.ndarray:
        """Codes of a request: the known user's own when the request brings no profile, else the
        profile's (a cold user, or a known one whose profile is given afresh)."""
        if user is not None and not profile:
            return self.user_codes[user]
        return self.encode_profile(profile)

    @property
    def cardinalities(self) -> list[int]:
        """Number of codes per user field, the unknown code included."""
        return [len(self.vocab[f]) + 1 for f in self.fields]

    @property
    def n_genres(self) -> int:
        return self.item_genres.shape[1]

    @property
    def n_years(self) -> int:
        return int(self.item_year.max()) + 1

    def rows(self, user_codes: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Model inputs for (user, item) rows: user codes are one row or one per item."""
        items = np.asarray(items, dtype=np.int64)
        codes = np.broadcast_to(np.asarray(user_codes, dtype=np.int64),
                                (len(items), len(self.fields)))
        return {"user": codes, "genres": self.item_genres[items], "year": self.item_year[items],
                "item": self.item_code[items]}
