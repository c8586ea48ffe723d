"""Sanity baselines that every table carries: random, popularity, segment popularity.

A number means something only beside these. Ranking scores use interaction counts; rating
predictions use item means shrunk toward the global mean, so rare items do not get extreme
averages from one or two ratings.
"""

from __future__ import annotations

import zlib
from typing import Self

import numpy as np

from thaw.data.features import segment_key, user_segments
from thaw.data.schema import Dataset
from thaw.models.base import Context, Recommender, Validator


def shrunk_means(items: np.ndarray, ratings: np.ndarray, n_items: int, prior: np.ndarray | float,
                 strength: float) -> np.ndarray:
    """Per-item mean rating pulled toward ``prior`` as if it were ``strength`` extra ratings."""
    sums = np.bincount(items, weights=ratings, minlength=n_items)
    counts = np.bincount(items, minlength=n_items)
    return (sums + strength * prior) / (counts + strength)


class RandomRecommender(Recommender):
    """Uniform random scores, reproducible: the same context always gets the same numbers."""

    name = "random"
    predicts_ratings = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.scale = (1.0, 5.0)

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        self.scale = data.rating_scale
        return self

    def _rng(self, ctx: Context, items: np.ndarray) -> np.random.Generator:
        key = np.concatenate([ctx.history.item, [-2], items]).astype(np.int64).tobytes()
        user = -1 if ctx.user is None else ctx.user
        return np.random.default_rng([self.seed, user + 1, zlib.crc32(key)])

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self._rng(ctx, items).random(len(items))

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        low, high = self.scale
        return self._rng(ctx, items).uniform(low, high, len(items))


class Popularity(Recommender):
    """Most interacted-with items first; ratings are shrunk item means. Ignores the support."""

    name = "pop"
    predicts_ratings = True

    def __init__(self, shrinkage: float = 5.0) -> None:
        self.shrinkage = shrinkage

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        inter = data.interactions
        self.counts = np.bincount(inter.item, minlength=data.n_items).astype(np.float64)
        self.global_mean = float(inter.rating.mean()) if len(inter) else float(np.mean(data.rating_scale))
        self.item_means = shrunk_means(inter.item, inter.rating, data.n_items, self.global_mean,
                                       self.shrinkage)
        return self

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.counts[items]

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.item_means[items]


class SegmentPopularity(Popularity):
    """Popularity among warm users who share the cold user's segment (gender and age band).

    Segment counts are smoothed toward global popularity with ``smoothing`` pseudo-interactions,
    so a small segment does not rank by a handful of votes; an unknown segment gets plain pop.
    """

    name = "segment-pop"

    def __init__(self, fields: tuple[str, ...] = ("gender", "age"), smoothing: float = 50.0,
                 shrinkage: float = 5.0) -> None:
        super().__init__(shrinkage)
        self.fields = tuple(fields)
        self.smoothing = smoothing

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        super().fit(data)
        inter = data.interactions
        segments = user_segments(data, self.fields)
        share = self.counts / max(self.counts.sum(), 1.0)
        self.segment_scores: dict[tuple, np.ndarray] = {}
        self.segment_means: dict[tuple, np.ndarray] = {}
        known = sorted({s for s in segments if s is not None})
        index = {s: i for i, s in enumerate(known)}
        labels = np.array([index[s] if s is not None else -1 for s in segments])
        for segment, label in index.items():
            mask = labels[inter.user] == label
            counts = np.bincount(inter.item[mask], minlength=data.n_items)
            self.segment_scores[segment] = (counts + self.smoothing * share) / (
                counts.sum() + self.smoothing)
            self.segment_means[segment] = shrunk_means(inter.item[mask], inter.rating[mask],
                                                       data.n_items, self.item_means, self.shrinkage)
        return self

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        segment = segment_key(ctx.profile, self.fields)
        if segment not in self.segment_scores:
            return super().score(ctx, items)
        return self.segment_scores[segment][items]

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        segment = segment_key(ctx.profile, self.fields)
        if segment not in self.segment_means:
            return super().predict(ctx, items)
        return self.segment_means[segment][items]
