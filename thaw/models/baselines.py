"""Sanity baselines that every table carries: random, popularity, segment popularity, biases.

A number means something only beside these. Ranking scores use interaction counts; rating
predictions use item means shrunk toward the global mean, so rare items do not get extreme
averages from one or two ratings. ``bias`` (global mean + item bias + user bias) is the rating
baseline every rating model must beat.
"""

from __future__ import annotations

import zlib
from typing import Self

import numpy as np

from thaw.data.features import segment_key, user_segments
from thaw.data.schema import Dataset
from thaw.models.base import Context, Recommender, Validator, usable_validator, validation_score


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
    scores_new_items = True  # its numbers never read the training data
    main_job_item_cold = True

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
    scores_new_items = True  # a count of 0, and the prior (global mean) for ratings
    main_job_item_cold = True

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
    main_job_item_cold = True

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


def fit_biases(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, n_users: int,
               n_items: int, reg_user: float, reg_item: float, iterations: int
               ) -> tuple[float, np.ndarray, np.ndarray]:
    """Global mean, user biases and item biases minimising the squared error of
    mu + b_u + b_i plus ``reg_user`` * sum b_u^2 + ``reg_item`` * sum b_i^2, by alternating
    least squares: each half step is the exact minimiser given the other side,
    b_i = sum(r - mu - b_u) / (reg_item + n_i), then b_u = sum(r - mu - b_i) / (reg_user + n_u).
    """
    mu = float(ratings.mean()) if len(ratings) else 0.0
    n_u = np.bincount(users, minlength=n_users).astype(np.float64)
    n_i = np.bincount(items, minlength=n_items).astype(np.float64)
    b_u, b_i = np.zeros(n_users), np.zeros(n_items)
    for _ in range(iterations):
        b_i = np.bincount(items, weights=ratings - mu - b_u[users], minlength=n_items) / (reg_item + n_i)
        b_u = np.bincount(users, weights=ratings - mu - b_i[items], minlength=n_users) / (reg_user + n_u)
    return mu, b_u, b_i


class Biases(Recommender):
    """Rating = global mean + item bias + user bias (Koren's baseline predictor).

    Biases are fitted on training users by regularised alternating least squares
    (``fit_biases``). A cold user's bias is folded in from the support in closed form with the
    same regulariser, b_u = sum(r - mu - b_i) / (reg_user + K), so K = 0 gives mu + b_i. With a
    validator the two regularisers are chosen from ``grid`` x ``grid`` on validation users.
    Ranking (``score``) is mu + b_i: items ordered by their shrunk item bias, a popularity-like
    order by how well an item is rated rather than how often (the user's bias shifts every item
    alike, so it cannot change the order).
    """

    name = "bias"
    predicts_ratings = True
    scores_new_items = True  # an item bias of 0: the global mean
    main_job_item_cold = True
    chosen_from = {"reg_user": "grid", "reg_item": "grid"}

    def __init__(self, reg_user: float = 10.0, reg_item: float = 10.0, iterations: int = 10,
                 grid: tuple[float, ...] = (1.0, 3.0, 10.0, 25.0)) -> None:
        self.reg_user, self.reg_item, self.iterations, self.grid = reg_user, reg_item, iterations, grid

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        validate = usable_validator(validate)
        if validate is None or len(self.grid) < 2:
            return self._fit(data, self.reg_user, self.reg_item)
        pairs = [(u, i) for u in self.grid for i in self.grid]
        best = max(pairs, key=lambda pair: validation_score(
            validate, self._fit(data, *pair), f"with reg_user {pair[0]}, reg_item {pair[1]}"))
        return self._fit(data, *best)

    def _fit(self, data: Dataset, reg_user: float, reg_item: float) -> Self:
        self.reg_user, self.reg_item = reg_user, reg_item
        inter = data.interactions
        self.global_mean, self.user_bias, self.item_bias = fit_biases(
            inter.user, inter.item, inter.rating.astype(np.float64), data.n_users, data.n_items,
            reg_user, reg_item, self.iterations)
        if not len(inter):
            self.global_mean = float(np.mean(data.rating_scale))
        self.known_users = np.zeros(data.n_users, dtype=bool)
        self.known_users[inter.user] = True
        return self

    def bias_of(self, ctx: Context) -> float:
        """A training user's fitted bias, else the bias folded in from the support."""
        if ctx.user is not None and ctx.user < len(self.known_users) and self.known_users[ctx.user]:
            return float(self.user_bias[ctx.user])
        hist = ctx.history
        residuals = hist.rating.astype(np.float64) - self.global_mean - self.item_bias[hist.item]
        return float(residuals.sum() / (self.reg_user + len(hist)))

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.global_mean + self.item_bias[items]

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.global_mean + self.item_bias[items] + self.bias_of(ctx)
