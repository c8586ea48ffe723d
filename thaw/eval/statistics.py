"""The statistics of a results table: bootstrap means, paired tests with Holm's correction,
the item-side strata, and the warnings for results that look like bugs.

They read only the per-user rows, so reports and benchmarks use them on saved results too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

from thaw.data.splits import Split, item_stratum
from thaw.errors import ThawError
from thaw.eval.metrics import LOWER_IS_BETTER, bootstrap_interval
from thaw.models.base import Episode


def summarise(per_user: pd.DataFrame, *, n_bootstrap: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean over users with a bootstrap 95% interval, one row per (model, K, metric)."""
    rows = []
    for (model, k, metric), group in per_user.groupby(["model", "K", "metric"], sort=False):
        values = group["value"].to_numpy(dtype=np.float64)
        low, high = bootstrap_interval(values, n_resamples=n_bootstrap, seed=seed)
        rows.append((model, int(k), metric, float(np.nanmean(values)), low, high,
                     int(np.count_nonzero(~np.isnan(values)))))
    return pd.DataFrame(rows, columns=["model", "K", "metric", "value", "low", "high", "users"])


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error).

    The i-th smallest of m p-values is multiplied by m - i + 1 (i from 1), the products are
    made non-decreasing in that order, and capped at 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    adjusted = np.empty(m)
    adjusted[order] = scaled
    return adjusted


COMPARISON_COLUMNS = ["K", "metric", "model_a", "model_b", "better", "test", "users", "diff",
                      "p_value", "p_holm", "significant"]


def paired_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of per-user differences (1.0 when all are zero)."""
    diff = np.asarray(diff, dtype=np.float64)
    return 1.0 if np.allclose(diff, 0) else float(stats.wilcoxon(diff, zero_method="zsplit").pvalue)


def clustered_means(diff: np.ndarray, clusters: np.ndarray, *, n_bootstrap: int = 10_000,
                    seed: int = 0) -> np.ndarray:
    """Bootstrap means of per-user differences when users come in clusters whose differences
    move together (users whose target is the same item): whole clusters are resampled with
    replacement, so one item that is many users' target weighs as one."""
    diff = np.asarray(diff, dtype=np.float64)
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(cluster, weights=diff)
    sizes = np.bincount(cluster).astype(np.float64)
    rng = np.random.default_rng([seed, len(diff)])
    draws = rng.multinomial(len(sums), np.full(len(sums), 1.0 / len(sums)), size=n_bootstrap)
    return (draws @ sums) / (draws @ sizes)


def clustered_p(diff: np.ndarray, clusters: np.ndarray, *, n_bootstrap: int = 10_000, seed: int = 0) -> float:
    """Two-sided p of the mean of per-user differences, its uncertainty from resampling whole
    clusters (``clustered_means``): twice the share of resampled means on the far side of zero
    (capped at 1). The estimate is still the mean over users; only its uncertainty counts
    clusters, not users."""
    if np.allclose(np.asarray(diff, dtype=np.float64), 0):
        return 1.0
    means = clustered_means(diff, clusters, n_bootstrap=n_bootstrap, seed=seed)
    return float(min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0))))


def compare(per_user: pd.DataFrame, pairs: Sequence[tuple[str, str]] | None = None,
            alpha: float = 0.05) -> pd.DataFrame:
    """Paired tests between models, for each K and metric, over the users both were scored on.

    Every pair of models is compared, or only ``pairs`` when given (a model absent from a K and
    metric, such as a ranking-only model for MAE, drops out of that family). Each row has the
    test (a two-sided Wilcoxon signed-rank test on the per-user differences), the number of
    users, the mean difference ``model_a - model_b``, which of the two is better, the raw p
    and the Holm-corrected p. The correction is over the pairs compared within one (K,
    metric) family, and ``significant`` uses the corrected p. Without ``pairs``, model_a is the
    better-ranked of the two by mean, so the rows whose model_a is the family's best come first.
    """
    if pairs is not None:
        pairs = [(str(a), str(b)) for a, b in pairs]
        known = set(per_user["model"])
        unknown = sorted({m for pair in pairs for m in pair} - known)
        if unknown:
            raise ThawError(f"cannot compare {', '.join(unknown)}: not among the evaluated models "
                            f"({', '.join(dict.fromkeys(per_user['model']))})")
        if any(a == b for a, b in pairs):
            raise ThawError("a comparison needs two different models")
    frames = []
    for (k, metric), group in per_user.groupby(["K", "metric"], sort=False):
        wide = group.pivot_table(index="user", columns="model", values="value", sort=False)
        lower = metric in LOWER_IS_BETTER
        means = wide.mean().sort_values(ascending=lower, kind="stable")
        if pairs is None:
            family = list(combinations(means.index, 2))
        else:
            family = [(a, b) for a, b in dict.fromkeys(pairs) if a in wide and b in wide]
        rows = []
        values = {m: wide[m].to_numpy(dtype=np.float64) for m in wide.columns}
        for a, b in family:
            both = ~(np.isnan(values[a]) | np.isnan(values[b]))
            if both.sum() < 2:
                continue
            diff = values[a][both] - values[b][both]
            p = paired_p(diff)
            mean_diff = float(diff.mean())
            better = a if (mean_diff < 0 if lower else mean_diff > 0) else b if mean_diff else ""
            rows.append([int(k), metric, a, b, better, "wilcoxon", int(both.sum()), mean_diff, p])
        if rows:
            frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS[:-2])
            frame["p_holm"] = holm(frame["p_value"].to_numpy())
            frame["significant"] = frame["p_holm"] < alpha
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def degenerate_results(per_user: pd.DataFrame) -> list[str]:
    """Warnings for results that have fooled public toolkits."""
    notes = []
    for (model, k, metric), group in per_user.groupby(["model", "K", "metric"], sort=False):
        if metric in LOWER_IS_BETTER:
            continue
        values = group["value"].to_numpy()
        if len(values) > 1 and np.all(values == 1.0):
            notes.append(f"{model}: {metric} is 1.0 for every user at K={k}; check for leakage "
                         "or a candidate set the target always wins")
    vectors = {m: g.sort_values(["K", "metric", "user"])["value"].to_numpy()
               for m, g in per_user.groupby("model", sort=False)}
    for a, b in combinations(vectors, 2):
        if vectors[a].shape == vectors[b].shape and np.array_equal(vectors[a], vectors[b],
                                                                   equal_nan=True):
            notes.append(f"{a} and {b} give identical numbers for every user and metric; "
                         "is one a copy of the other?")
    return notes


def item_strata_table(per_user: pd.DataFrame, split: Split, test_eps: Mapping[int, Sequence[Episode]],
                      protocol: str, n_bootstrap: int, seed: int) -> pd.DataFrame:
    """The item-side cold-to-warm curve (new-item and both splits, next-item protocol): every
    episode, at every K, grouped by its target item's training interactions read in the
    split's item strata; column N replaces K and ``users`` counts episodes."""
    columns = ["model", "N", "metric", "value", "low", "high", "users"]
    if split.kind not in ("new-item", "both") or protocol != "next-item":
        return pd.DataFrame(columns=columns)
    counts = np.bincount(split.train.interactions.item, minlength=split.train.n_items)
    keys = [(k, e.user) for k, eps in test_eps.items() for e in eps]
    targets = np.array([e.candidates[0] for eps in test_eps.values() for e in eps], dtype=np.int64)
    strata = pd.Series(item_stratum(counts[targets], split.item_strata),
                       index=pd.MultiIndex.from_tuples(keys, names=["K", "user"]), name="N")
    rows = per_user.join(strata, on=["K", "user"])
    rows["user"] = list(zip(rows["K"], rows["user"], strict=True))  # one episode, one draw
    rows["K"] = rows.pop("N")
    return summarise(rows, n_bootstrap=n_bootstrap, seed=seed).rename(columns={"K": "N"})[columns]
