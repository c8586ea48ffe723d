"""The cross-domain protocol: every model on the same cold target users, K-stratified, and the
negative-transfer alarm. An evaluation, so it lives in thaw/eval beside ``evaluate``; the
transfer models and the data (thaw/transfer) know nothing of it.

Transfer can hurt: a source that says little about the target, or a mapping that overfits the
overlap users, gives cold users worse recommendations than the target alone. Public code does
not check. Here every transfer model is compared with ``tgt`` at every K and headline metric
(paired Wilcoxon test over the same users, Holm-corrected over the transfer models), and each
place where transfer is significantly worse is flagged in the result and warned about.

On ratings the tables give each metric twice: thaw's mean over users (each test user counts
once; what the alarm's paired tests compare) and the pooled MAE and RMSE the papers quote (over
every query rating at once, so a user with more ratings counts more).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from thaw.data.splits import Split
from thaw.eval.episodes import episodes
from thaw.eval.protocol import DEFAULT_KS, EvalResult, evaluate
from thaw.eval.statistics import compare

TRANSFER_MODELS = ("cmf", "emcdr", "ptupcdr")  # the transfer models the protocol runs by default
BASELINE = "tgt"
DEFAULT_MODELS = ("random", "pop", "segment-pop", BASELINE, *TRANSFER_MODELS)
TRANSFER_MEMBERS = ("pop", "segment-pop", BASELINE, *TRANSFER_MODELS)
"""The stack over the cross-domain members (``transfer_stack``; what `thaw fit` makes on a pair)."""
HEADLINES = {"rating": ("mae", "rmse"), "next-item": ("ndcg@10",)}
POOLED = {"mae": "pooled-mae", "rmse": "pooled-rmse"}
"""Per-user metric -> the result table's name for it pooled over every query rating."""


class NegativeTransferWarning(UserWarning):
    """A transfer model is significantly worse than the target-only model somewhere."""


def transfer_stack(seed: int = 0, members: Sequence[str] = TRANSFER_MEMBERS) -> Any:
    """The stack over the cross-domain members: K = 0 requests with a source history get a
    row of their own (``thaw.stack.router.SOURCE_ROW``)."""
    from thaw.stack import Stack

    return Stack(members, seed=seed)


def evaluate_transfer(split: Split, *, protocol: str = "rating", ks: Sequence[int] = DEFAULT_KS,
                      models: Sequence[str] = DEFAULT_MODELS, stack: bool = True, seed: int = 0,
                      **options: Any) -> EvalResult:
    """``evaluate`` on a cross-domain split (``cross_domain_split``), plus the alarm: the
    result's ``meta["negative_transfer"]`` lists every (K, metric, model) where a transfer
    model is significantly worse than ``tgt``, and each one is warned about. On ratings the
    table also holds the pooled MAE and RMSE (``POOLED``, see ``pooled_errors``).

    The stack is made of the requested models among ``TRANSFER_MEMBERS`` and learned from
    their outputs here, so no member is fitted twice; its fallback (segment-pop, which a
    stack always holds) is evaluated with them when not requested, since ``evaluate`` learns
    a stack from outputs only when every member is evaluated, and fits it afresh otherwise."""
    from thaw.registry import make_model
    from thaw.stack.router import FALLBACK

    chosen = {name: make_model(name, seed=seed) for name in models}
    if stack:
        if FALLBACK not in chosen:
            chosen[FALLBACK] = make_model(FALLBACK, seed=seed)
        chosen["stack"] = transfer_stack(seed, [m for m in TRANSFER_MEMBERS if m in chosen])
    result = evaluate(chosen, split, protocol=protocol, ks=ks, seed=seed, **options)
    if protocol == "rating":
        pooled = pooled_errors(result.per_user, query_sizes(split, result.meta["ks"]),
                               n_bootstrap=options.get("n_bootstrap", 1000), seed=seed)
        result.table = pd.concat([result.table, pooled], ignore_index=True)
    alarms = negative_transfer(result.per_user, protocol)
    result.meta["negative_transfer"] = alarms.to_dict("records")
    for row in alarms.itertuples():
        note = (f"negative transfer: {row.model_a} is worse than {BASELINE} at K={row.K} on "
                f"{row.metric} ({row.diff:+.4f}, Holm p={row.p_holm:.2g}, {row.users} users)")
        result.warnings.append(note)
        warnings.warn(note, NegativeTransferWarning, stacklevel=2)
    return result


def negative_transfer(per_user: pd.DataFrame, protocol: str, alpha: float = 0.05) -> pd.DataFrame:
    """Rows of the paired tests (each model that transfers, its class's ``needs_source``, and
    the stack, against ``tgt``; headline metrics) where it is significantly worse."""
    from thaw.registry import model_class, model_names

    present = set(per_user["model"])
    transfer = [m for m in model_names() if m in present and model_class(m).needs_source]
    pairs = [(m, BASELINE) for m in (*transfer, "stack") if m in present]
    if BASELINE not in present or not pairs:
        return pd.DataFrame(columns=["K", "metric", "model_a", "model_b", "diff", "p_holm", "users"])
    tests = compare(per_user[per_user["metric"].isin(HEADLINES[protocol])], pairs, alpha)
    worse = tests[tests["significant"] & (tests["better"] == BASELINE)]
    return worse[["K", "metric", "model_a", "model_b", "diff", "p_holm", "users"]].reset_index(drop=True)


def query_sizes(split: Split, ks: Sequence[int]) -> pd.DataFrame:
    """How many query ratings each test user has at each K (the episodes ``evaluate`` scored):
    columns K, user, ratings."""
    rows = [(k, e.user, len(e.truth)) for k in ks
            for e in episodes(split, "test", k, "rating", max_k=max(ks))]
    return pd.DataFrame(rows, columns=["K", "user", "ratings"])


def pooled_errors(per_user: pd.DataFrame, sizes: pd.DataFrame, *, n_bootstrap: int = 1000,
                  seed: int = 0) -> pd.DataFrame:
    """The papers' MAE and RMSE, pooled over every query rating of the test users, as rows of
    the result table (metric ``POOLED[m]``; value, bootstrap 95% interval, users).

    A user's MAE times their number of query ratings is their sum of absolute errors (their
    RMSE squared times it, their sum of squared errors), so the pooled errors follow from the
    per-user ones exactly. The interval resamples users, not ratings: one user's ratings are
    not independent of each other."""
    rows = []
    data = per_user[per_user["metric"].isin(list(POOLED))].merge(sizes, on=["K", "user"])
    data = data[data["value"].notna()]
    for (model, k, metric), group in data.groupby(["model", "K", "metric"], sort=False):
        n = group["ratings"].to_numpy(dtype=np.float64)
        value = group["value"].to_numpy(dtype=np.float64)
        errors = n * (value ** 2 if metric == "rmse" else value)
        # Row 0 is every user once; the others are the bootstrap's resamples of users.
        draws = np.vstack([np.arange(len(n)),
                           np.random.default_rng(seed).integers(0, len(n), (n_bootstrap, len(n)))])
        means = errors[draws].sum(axis=1) / n[draws].sum(axis=1)
        if metric == "rmse":
            means = np.sqrt(means)
        low, high = np.percentile(means[1:], [2.5, 97.5])
        rows.append((model, int(k), POOLED[metric], float(means[0]), float(low), float(high), len(n)))
    return pd.DataFrame(rows, columns=["model", "K", "metric", "value", "low", "high", "users"])
