"""Episodes: what the protocol tells a model about one held-out user at one K, and what it
reads back (its outputs and their per-episode metrics).

Apart from the orchestration (thaw/eval/protocol.py), because the validator and the
out-of-fold fits build and score episodes the same way. The Episode record itself, and how a
model's outputs and confidences are read from one, belong to the model contract
(thaw/models/base.py): a model that learns from other models' outputs reads them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from thaw.data.splits import Split
from thaw.errors import ThawError
from thaw.eval.metrics import graded_ndcg, ranking_metrics, rating_errors, target_rank
from thaw.models.base import Context, Episode, Recommender, model_outputs

PROTOCOLS = ("next-item", "rating")
METRICS = {
    "next-item": ("hit@1", "hit@10", "ndcg@10", "mrr", "auc"),
    "rating": ("mae", "rmse", "ndcg@3", "ndcg@10"),
}


def episodes(split: Split, part: str, k: int, protocol: str, *, max_k: int,
             candidates: str = "sampled") -> list[Episode]:
    """Episodes of the val or test users who have more than ``max_k`` interactions."""
    check_protocol(protocol, candidates)
    out = []
    for user, seq in split.sequences(part).items():
        if len(seq) <= max_k:
            continue
        # The support's rows carry no user id: a model knows who asks only through
        # Context.user (None for a user it was not trained on).
        support = replace(seq.take(slice(0, k)), user=np.full(k, -1))
        ctx = Context(user=user if split.users_known else None, history=support,
                      profile=split.train.profile(user), source=split.sources.get(user))
        if protocol == "next-item":
            target = seq.item[k]
            if candidates == "sampled":
                items = np.concatenate([[target], split.negatives[user]])
            else:
                # Every item of the user's own history is out, not only the support and the
                # target: their later positives and, on warm and new-item splits, training rows.
                pool = split.held_items if len(split.held_items) else np.arange(split.train.n_items)
                others = np.setdiff1d(pool, np.union1d(seq.item, _own_items(split, user)))
                items = np.concatenate([[target], others])
            out.append(Episode(user, k, ctx, items.astype(np.int64), np.empty(0)))
        else:
            query = seq.take(slice(k, None))
            out.append(Episode(user, k, ctx, query.item, query.rating))
    return out


def _own_items(split: Split, user: int) -> np.ndarray:
    """The items a held-out user interacted with anywhere in the split's data (``split.seen``;
    for a Split built without it, their training rows)."""
    if user in split.seen:
        return split.seen[user]
    train = split.train.interactions
    return np.unique(train.item[train.user == user])


def check_protocol(protocol: str, candidates: str) -> None:
    if protocol not in PROTOCOLS:
        raise ThawError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if candidates not in ("sampled", "full"):
        raise ThawError("candidates must be 'sampled' (target + 100 negatives) or 'full'")


def score_episodes(model: Recommender, eps: Sequence[Episode], protocol: str,
                   cutoffs: Sequence[int] = (1, 10)) -> tuple[list[dict[str, float]], dict[str, int]]:
    """Per-episode metrics (next-item: Hit@N and NDCG@N at each cutoff N, MRR, AUC), plus
    counts of suspicious score vectors (constant, NaN)."""
    outputs = model_outputs(model, eps, protocol)
    return episode_metrics(model.name, eps, outputs, protocol,
                           protocol == "rating" and model.predicts_ratings, cutoffs)


def episode_metrics(name: str, eps: Sequence[Episode], outputs: Sequence[np.ndarray], protocol: str,
                    rates: bool, cutoffs: Sequence[int] = (1, 10)
                    ) -> tuple[list[dict[str, float]], dict[str, int]]:
    """The metrics of outputs already computed (``rates``: they are predicted ratings)."""
    flags = {"constant": 0, "nan": 0}
    rows: list[dict[str, float]] = []
    for ep, s in zip(eps, outputs, strict=True):
        s = np.asarray(s, dtype=np.float64)
        if s.shape != ep.candidates.shape:
            raise ThawError(f"model '{name}' returned {s.shape[0] if s.ndim else 0} values "
                            f"for {len(ep.candidates)} items")
        flags["nan"] += int(np.isnan(s).any())
        flags["constant"] += int(len(s) > 1 and np.all(s == s[0]))
        if protocol == "next-item":
            rows.append(ranking_metrics(target_rank(s[0], s[1:]), len(s) - 1, ks=tuple(cutoffs)))
        else:
            row = rating_errors(s, ep.truth) if rates else {}
            row["ndcg@3"] = graded_ndcg(s, ep.truth, 3)
            row["ndcg@10"] = graded_ndcg(s, ep.truth, 10)
            rows.append(row)
    return rows, flags


def fold_episodes(split: Split, ks: Sequence[int], protocol: str, floor: int) -> list[Episode]:
    """Episodes of a split's validation part at every K, from users with more than
    max(K, ``floor``) interactions (like the validation episodes a stack learns from)."""
    return [e for k in ks for e in episodes(split, "val", k, protocol, max_k=max(k, floor))]
