"""Per-user metrics. Ties always count against the model.

A constant scorer must score like the worst case, not the average: the target's rank is one
plus the number of other candidates scored at least as high, and a NaN score loses every
comparison. Public toolkits that break ties by position or by item id report inflated numbers.
"""

from __future__ import annotations

import numpy as np

LOWER_IS_BETTER = frozenset({"mae", "rmse"})
"""Metrics where a smaller value is better (the rest: larger)."""


def target_rank(target_score: float, other_scores: np.ndarray) -> int:
    """1-based rank of the target among the others, ties (and NaN) counted against it."""
    other_scores = np.asarray(other_scores, dtype=np.float64)
    # `not (other < target)` is True for ties, for NaN others, and for everything when the
    # target itself is NaN: each of these costs the model a place.
    return 1 + int(np.count_nonzero(~(other_scores < target_score)))


def ranking_metrics(rank: int, n_others: int, ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Hit@k, NDCG@k, MRR and AUC of one target at ``rank`` among ``n_others`` other candidates."""
    out: dict[str, float] = {}
    for k in ks:
        out[f"hit@{k}"] = float(rank <= k)
    for k in ks:
        if k > 1:
            out[f"ndcg@{k}"] = 1.0 / np.log2(rank + 1) if rank <= k else 0.0
    out["mrr"] = 1.0 / rank
    out["auc"] = (n_others - (rank - 1)) / n_others if n_others else float("nan")
    return out


def rating_errors(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MAE and RMSE of one user's query; a NaN prediction makes both infinite, so it cannot hide."""
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    err = np.abs(predicted - truth)
    err[np.isnan(err)] = np.inf
    return {"mae": float(err.mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


def graded_ndcg(scores: np.ndarray, ratings: np.ndarray, k: int) -> float:
    """NDCG@k of the query ranked by ``scores`` with gain 2^rating - 1.

    Among items with tied scores the worst order (lowest rating first) is used, so ties cost
    the model; NaN scores rank last. NaN when no item has a positive gain.
    """
    scores = np.asarray(scores, dtype=np.float64).copy()
    ratings = np.asarray(ratings, dtype=np.float64)
    scores[np.isnan(scores)] = -np.inf
    gains = np.power(2.0, ratings) - 1.0
    order = np.lexsort((ratings, -scores))  # by score descending, ties by rating ascending
    discounts = 1.0 / np.log2(np.arange(2, min(k, len(scores)) + 2))
    dcg = float((gains[order][:k] * discounts).sum())
    ideal = float((np.sort(gains)[::-1][:k] * discounts).sum())
    return dcg / ideal if ideal > 0 else float("nan")


def bootstrap_interval(values: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users (NaN values dropped)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
