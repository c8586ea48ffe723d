"""Tasks for feature-based meta-learners: one user = one task, support = first K, query = later.

Two objectives share the code. ``rating``: rows are (user, item) with the rating as target
(MSE). ``implicit``: rows are the user's items with target 1 plus sampled items they never
touched with target 0 (BCE), which is what ranking the next item needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from thaw.data.features import FeatureSpace
from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import by_user, chronological_order
from thaw.meta.maml import TaskBatch

OBJECTIVES = ("rating", "implicit")
Rows = dict[str, np.ndarray]


class TaskBuilder:
    """Builds padded support/query batches from users' profiles and interactions."""

    def __init__(self, space: FeatureSpace, n_items: int, objective: str = "rating", *,
                 n_negatives: int = 4, max_support: int = 10, max_query: int = 20) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}")
        self.space, self.n_items, self.objective = space, n_items, objective
        self.n_negatives, self.max_support, self.max_query = n_negatives, max_support, max_query

    def rows(self, user_codes: np.ndarray, items: np.ndarray, targets: np.ndarray) -> Rows:
        out = self.space.rows(user_codes, items)
        out["target"] = np.asarray(targets, dtype=np.float32)
        return out

    def labelled(self, user_codes: np.ndarray, inter: Interactions, exclude: np.ndarray,
                 rng: np.random.Generator) -> Rows:
        """Rows for some interactions: ratings as targets, or positives plus negatives."""
        if self.objective == "rating":
            return self.rows(user_codes, inter.item, inter.rating)
        negatives = sample_unseen(self.n_items, exclude, len(inter) * self.n_negatives, rng)
        items = np.concatenate([inter.item, negatives])
        targets = np.concatenate([np.ones(len(inter)), np.zeros(len(negatives))])
        return self.rows(user_codes, items, targets)

    @property
    def support_size(self) -> int:
        return self.max_support * (1 if self.objective == "rating" else 1 + self.n_negatives)

    @property
    def query_size(self) -> int:
        return self.max_query * (1 if self.objective == "rating" else 1 + self.n_negatives)

    def batch(self, tasks: Sequence[tuple[Rows, Rows]]) -> TaskBatch:
        """Stack tasks, padding supports and queries to fixed sizes with mask 0."""
        support = _stack([pad(s, self.support_size) for s, _ in tasks])
        query = _stack([pad(q, self.query_size) for _, q in tasks])
        return TaskBatch(support, query)


def sample_unseen(n_items: int, seen: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n items (with replacement) outside ``seen``; rejection sampling, exact and cheap."""
    seen_mask = np.zeros(n_items, dtype=bool)
    seen_mask[np.asarray(seen, dtype=np.int64)] = True
    if seen_mask.all() or n == 0:
        return np.empty(0, dtype=np.int64)
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        draw = rng.integers(0, n_items, 2 * n + 8)
        out = np.concatenate([out, draw[~seen_mask[draw]]])
    return out[:n]


def pad(rows: Rows, size: int) -> Rows:
    """Cut or pad rows to ``size``, adding a 0/1 mask."""
    n = len(rows["target"])
    out = {}
    for key, value in rows.items():
        value = value[:size]
        if n < size:
            filler = np.zeros((size - n, *value.shape[1:]), dtype=value.dtype)
            value = np.concatenate([value, filler])
        out[key] = value
    out["mask"] = (np.arange(size) < n).astype(np.float32)
    return out


def _stack(rows: Sequence[Rows]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}


class TrainingTasks:
    """Meta-training tasks from warm users: a random K in 1..max_support, query = later items."""

    def __init__(self, data: Dataset, builder: TaskBuilder, seed: int = 0) -> None:
        inter = data.interactions.take(chronological_order(data.interactions, seed))
        self.sequences = {u: s for u, s in by_user(inter).items() if len(s) >= 2}
        self.users = np.array(sorted(self.sequences), dtype=np.int64)
        self.builder = builder
        self.codes = builder.space.user_codes

    def sample(self, users: Sequence[int], rng: np.random.Generator) -> TaskBatch:
        tasks = []
        b = self.builder
        for user in users:
            seq = self.sequences[int(user)]
            k = int(rng.integers(1, min(b.max_support, len(seq) - 1) + 1))
            rest = np.arange(k, len(seq))
            if len(rest) > b.max_query:
                rest = np.sort(rng.choice(rest, b.max_query, replace=False))
            seen = seq.item
            support = b.labelled(self.codes[user], seq.take(slice(0, k)), seen, rng)
            query = b.labelled(self.codes[user], seq.take(rest), seen, rng)
            tasks.append((support, query))
        return b.batch(tasks)

    def epochs(self, n_epochs: int, batch_size: int, rng: np.random.Generator):
        """Yield (epoch, TaskBatch) over shuffled warm users."""
        for epoch in range(n_epochs):
            order = rng.permutation(self.users)
            for start in range(0, len(order), batch_size):
                yield epoch, self.sample(order[start:start + batch_size], rng)
