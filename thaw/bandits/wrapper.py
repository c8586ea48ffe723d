"""Make any Recommender explore: a bandit policy picks the first slots, the model ranks the rest.

The overview paper's advice: bandits are "worth it for the first slot or two of a feed — that's
where exploration value is highest. After the first few items, switch to ranking." So
``ExploringRecommender`` asks the model for its top ``pool`` candidates, lets the policy choose
``n_explore`` of them for the first slots (exploring per slot), and fills the remaining slots with
the model's own order. Every slate comes back with per-slot propensities for offline evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from thaw.bandits.policies import DecisionLog, Policy, as_candidates
from thaw.data.schema import Dataset
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender, Validator


@dataclass(frozen=True)
class Slate:
    """A recommended list; ``propensities[k]`` is P(slot k's item | slots before it)."""

    items: np.ndarray
    propensities: np.ndarray
    explored: np.ndarray
    """True for the slots the policy filled, False for the model's own ranking."""


class ExploringRecommender(Recommender):
    """A ``Recommender`` whose first ``n_explore`` slots are chosen by a bandit ``policy``.

    The policy only ever sees the model's top ``pool`` candidates, so exploration stays among
    items the model already finds plausible. Slots after the explored ones follow the model's
    ranking deterministically (propensity 1 given the explored picks). Items the model scores
    alike are ordered by a shuffle drawn per request from ``seed``, never by item id, which
    would hand low ids the slots and the policy's pool.
    """

    def __init__(self, model: Recommender, policy: Policy, n_explore: int = 2, pool: int = 50,
                 log: DecisionLog | None = None, seed: int = 0) -> None:
        if n_explore < 0:
            raise ThawError(f"n_explore must be >= 0, got {n_explore}")
        if pool < 1:
            raise ThawError(f"pool must be >= 1, got {pool}")
        self.model, self.policy = model, policy
        self.n_explore, self.pool = int(n_explore), int(pool)
        self.rng = np.random.default_rng(seed)
        self.name = f"{getattr(model, 'name', 'model')}+{policy.name}"
        self.predicts_ratings = getattr(model, "predicts_ratings", False)
        if log is not None:
            self.policy.log = log

    @property
    def log(self) -> DecisionLog | None:
        return self.policy.log

    def set_task(self, protocol: str) -> None:
        setter = getattr(self.model, "set_task", None)
        if setter is not None:
            setter(protocol)

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        self.model.fit(data, validate)
        return self

    def recommend(self, ctx: Context, candidates: np.ndarray, n: int = 10) -> Slate:
        """The top ``n`` slate: policy picks first, then the model's ranking of what is left."""
        cands = as_candidates(candidates)
        n = min(int(n), len(cands))
        if n < 1:
            raise ThawError(f"a slate needs at least one slot, got n={n}")
        scores = np.asarray(self.model.score(ctx, cands), dtype=np.float64)
        if scores.shape != cands.shape:
            raise ThawError(f"model '{self.model.name}' returned {scores.shape} scores for {cands.shape} items")
        order = np.lexsort((self.rng.permutation(len(cands)), -scores))  # best first, ties shuffled
        ranked = cands[order]
        k = min(self.n_explore, n)
        picked = np.empty(0, dtype=np.int64)
        props = np.empty(0)
        if k > 0:
            decision = self.policy.decide(ctx, ranked[: self.pool], k)
            picked, props = decision.items, decision.propensities
        rest = ranked[~np.isin(ranked, picked)][: n - len(picked)]
        items = np.concatenate([picked, rest])
        propensities = np.concatenate([props, np.ones(len(rest))])
        explored = np.concatenate([np.ones(len(picked), bool), np.zeros(len(rest), bool)])
        return Slate(items, propensities, explored)

    def update(self, ctx: Context, item: int, reward: float) -> None:
        """Feed back the user's reaction to a shown item (any slot) to the policy."""
        self.policy.update(ctx, item, reward)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        """Scores whose order is the explored slate over all ``items`` (higher = earlier).

        This draws a fresh exploration decision (it is a request), so it logs like ``recommend``.
        """
        items = np.asarray(items, dtype=np.int64)
        slate = self.recommend(ctx, items, len(np.unique(items)))
        rank = {int(it): r for r, it in enumerate(slate.items)}
        return np.asarray([len(slate.items) - rank[int(i)] for i in items], dtype=np.float64)

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.model.predict(ctx, items)

    def save_policy(self, path: str | Path) -> Path:
        """Save the policy's state (the model saves itself its own way)."""
        return self.policy.save(path)

    def load_policy(self, path: str | Path) -> None:
        log = self.policy.log
        self.policy = Policy.load(path)
        self.policy.log = log
