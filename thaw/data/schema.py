"""The two containers every part of thaw speaks: Interactions and Dataset.

Ids are internal integers 0..n-1 with the raw ids kept beside them, so models index arrays
directly and results can still be reported in the user's own ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from thaw.errors import DataError, ThawError


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays of (user, item, rating, ts); the order of the rows is meaningful."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    pos: np.ndarray | None = None
    """Each row's place in its user's order where the data fixes it (an external split's
    ``pos`` column), else None. ``chronological_order`` sorts by it instead of ts, so every
    model that orders training histories follows it."""

    def __post_init__(self) -> None:
        cols = {
            "user": np.asarray(self.user, dtype=np.int64),
            "item": np.asarray(self.item, dtype=np.int64),
            "rating": np.asarray(self.rating, dtype=np.float32),
            "ts": np.asarray(self.ts, dtype=np.int64),
        }
        lengths = {len(v) for v in cols.values()}
        if len(lengths) != 1:
            raise ValueError(f"Interactions columns differ in length: { {k: len(v) for k, v in cols.items()} }")
        for name, values in cols.items():
            if values.ndim != 1:
                raise ValueError(f"Interactions.{name} must be one-dimensional")
            object.__setattr__(self, name, values)
        if self.pos is not None:
            pos = np.asarray(self.pos, dtype=np.float64)
            if pos.shape != cols["item"].shape:
                raise ValueError("Interactions.pos must have one value per row")
            object.__setattr__(self, "pos", pos)

    @classmethod
    def empty(cls) -> Interactions:
        return cls(np.empty(0), np.empty(0), np.empty(0), np.empty(0))

    @classmethod
    def of(cls, items: Sequence[int], ratings: Sequence[float] | None = None,
           ts: Sequence[int] | None = None, user: int = -1) -> Interactions:
        """One user's history from plain lists (ratings default to 1, ts to 0, 1, 2, ...).
        ``items`` are internal indices (``Dataset.item_index`` maps raw ids to them): a
        negative one is a ThawError, not the last items counted from the end."""
        n = len(items)
        given = np.asarray(items)
        if given.size and given.dtype.kind in "iuf" and given.min() < 0:
            raise ThawError(f"Interactions.of: item index {given.min():g} is negative; items are internal "
                            "indices 0 to n - 1 (Dataset.item_index maps raw ids to them)")
        return cls(
            np.full(n, user),
            np.asarray(items),
            np.ones(n) if ratings is None else np.asarray(ratings),
            np.arange(n) if ts is None else np.asarray(ts),
        )

    def __len__(self) -> int:
        return len(self.item)

    def take(self, index: np.ndarray | slice) -> Interactions:
        """Rows selected by a boolean mask, an index array or a slice, in that order."""
        return Interactions(self.user[index], self.item[index], self.rating[index], self.ts[index],
                            None if self.pos is None else self.pos[index])

    def concat(self, other: Interactions) -> Interactions:
        if (self.pos is None) != (other.pos is None):
            raise ValueError("cannot concatenate interactions with and without a fixed order (pos)")
        pos = None if self.pos is None else np.concatenate([self.pos, other.pos])
        return Interactions(*(np.concatenate([getattr(self, c), getattr(other, c)]) for c in
                              ("user", "item", "rating", "ts")), pos)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"user": self.user, "item": self.item, "rating": self.rating, "ts": self.ts})


@dataclass(frozen=True)
class Dataset:
    """Interactions plus the id mappings and side features of users and items.

    ``user_features`` and ``item_features`` are indexed by internal id (0..n-1) and may have no
    columns. The catalogue is every item in ``item_ids``, including items nobody rated yet.
    """

    name: str
    interactions: Interactions
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_features: pd.DataFrame = field(default_factory=pd.DataFrame)
    item_features: pd.DataFrame = field(default_factory=pd.DataFrame)
    rating_scale: tuple[float, float] = (1.0, 5.0)
    source: str = ""
    source_domain: Dataset | None = None
    """The same users' interactions in another domain (cross-domain transfer, thaw/transfer):
    a Dataset over the same user ids (user u here is user u there) with items of its own."""

    def __post_init__(self) -> None:
        inter = self.interactions
        if len(self.item_ids) == 0 or len(self.user_ids) == 0:
            raise DataError(f"data set '{self.name}' has no users or no items", file=self.source or None)
        if len(inter) and (inter.user.min() < 0 or inter.user.max() >= len(self.user_ids)):
            raise ValueError("interaction user ids outside 0..n_users-1")
        if len(inter) and (inter.item.min() < 0 or inter.item.max() >= len(self.item_ids)):
            raise ValueError("interaction item ids outside 0..n_items-1")
        if not np.all(np.isfinite(inter.rating)):
            raise DataError("ratings must be finite numbers", file=self.source or None)
        for name, frame, n in (("user_features", self.user_features, self.n_users),
                               ("item_features", self.item_features, self.n_items)):
            if len(frame.columns) and len(frame) != n:
                raise ValueError(f"{name} has {len(frame)} rows, expected {n}")
            if len(frame.columns) == 0:
                object.__setattr__(self, name, pd.DataFrame(index=pd.RangeIndex(n)))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def with_interactions(self, interactions: Interactions, name: str | None = None) -> Dataset:
        """The same id space and features with other interactions (e.g. the training part)."""
        return Dataset(name or self.name, interactions, self.user_ids, self.item_ids,
                       self.user_features, self.item_features, self.rating_scale, self.source,
                       self.source_domain)

    def item_index(self, raw: Sequence[Any]) -> np.ndarray:
        """Internal ids of items named as the data set names them; unknown names are an error."""
        index = pd.Index(self.item_ids.astype(str))
        names = [str(r) for r in raw]
        found = index.get_indexer(names) if len(names) else np.empty(0, dtype=np.int64)
        unknown = [n for n, i in zip(names, found, strict=True) if i < 0]
        if unknown:
            raise DataError(f"unknown item(s) {', '.join(unknown[:5])}; items are named as in "
                            f"'{self.name}' (e.g. {', '.join(map(str, self.item_ids[:3]))})")
        return found.astype(np.int64)

    def profile(self, user: int) -> dict[str, Any]:
        """Side features of one user as a plain dict (empty when there are none)."""
        if len(self.user_features.columns) == 0:
            return {}
        return {k: v for k, v in self.user_features.iloc[user].items() if not _missing(v)}

    def summary(self) -> str:
        return (f"{self.name}: {self.n_users} users, {self.n_items} items, "
                f"{len(self.interactions)} interactions")

    @classmethod
    def from_frames(cls, name: str, ratings: pd.DataFrame, users: pd.DataFrame | None = None,
                    items: pd.DataFrame | None = None, *, source: str = "",
                    rating_scale: tuple[float, float] | None = None) -> Dataset:
        """Build a Dataset from raw frames.

        ``ratings`` has columns user, item, rating, ts (raw ids of any type); ``users`` and
        ``items`` are indexed by raw id. Users and items that appear only in the feature frames
        still get internal ids (an item nobody rated yet is still in the catalogue).
        """
        for col in ("user", "item", "rating", "ts"):
            if col not in ratings.columns:
                raise DataError(f"missing column '{col}'", file=source or None, column=col)
        if len(ratings) == 0:
            raise DataError(f"data set '{name}' has no interactions", file=source or None)
        raw_users = ratings["user"].astype(str)
        raw_items = ratings["item"].astype(str)
        user_ids = _id_space(raw_users, None if users is None else users.index)
        item_ids = _id_space(raw_items, None if items is None else items.index)
        user_pos = pd.Index(user_ids)
        item_pos = pd.Index(item_ids)
        inter = Interactions(
            user_pos.get_indexer(raw_users), item_pos.get_indexer(raw_items),
            ratings["rating"].to_numpy(dtype=np.float32), ratings["ts"].to_numpy(dtype=np.int64),
        )
        uf = _align(users, user_ids)
        itf = _align(items, item_ids)
        if rating_scale is None:
            rating_scale = (float(inter.rating.min()), float(inter.rating.max()))
        return cls(name, inter, user_ids, item_ids, uf, itf, rating_scale, source)


def _id_space(raw: pd.Series, extra: pd.Index | None) -> np.ndarray:
    """Raw ids in a stable order: those with interactions first (sorted), then feature-only ones."""
    seen = pd.unique(raw)
    ids = sorted(seen, key=_natural_key)
    if extra is not None:
        known = set(seen)
        ids += sorted((str(x) for x in extra if str(x) not in known), key=_natural_key)
    return np.asarray(ids, dtype=object)


def _natural_key(raw: str) -> tuple[int, Any]:
    """Sort numeric ids numerically and everything else as text."""
    try:
        return (0, int(raw))
    except ValueError:
        return (1, raw)


def _align(frame: pd.DataFrame | None, ids: np.ndarray) -> pd.DataFrame:
    if frame is None or len(frame.columns) == 0:
        return pd.DataFrame(index=pd.RangeIndex(len(ids)))
    frame = frame.copy()
    frame.index = frame.index.astype(str)
    frame = frame[~frame.index.duplicated(keep="first")]
    return frame.reindex(pd.Index(ids)).reset_index(drop=True)


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


Profile = Mapping[str, Any]
