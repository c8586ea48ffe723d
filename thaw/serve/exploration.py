"""Prior-informed Thompson sampling: arms start from a model's estimate, not from Beta(1, 1).

A policy that starts from uniform priors spends its first tens of thousands of rounds
exploring arms it knows nothing about. Here each (segment, item) arm's Beta prior is centred on
``prior(ctx, items)``, a like-probability from a model fitted on other users, with the weight
of ``strength`` pseudo-observations; evidence is counted per segment (``segment(ctx)``, e.g.
gender x age band), so the posterior moves from the prior to what this kind of user does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np

from thaw.bandits.policies import Policy, as_candidates, sampled_slate
from thaw.errors import ThawError
from thaw.models.base import Context

Prior = Callable[[Context, np.ndarray], np.ndarray]


class PriorThompson(Policy):
    """Beta-Bernoulli Thompson sampling with a Beta(s p, s (1 - p)) prior per arm; rewards in [0, 1].

    Not in the policy registry: its prior is a function, which a saved policy cannot hold.
    """

    label = "thompson-prior"
    """What exposure logs call it (a registry ``name`` would make it a policy by name)."""

    def __init__(self, prior: Prior, segment: Callable[[Context], Hashable] = lambda ctx: None,
                 strength: float = 10.0, seed: int = 0, propensity_draws: int = 32) -> None:
        super().__init__(seed)
        if strength <= 0:
            raise ThawError(f"the prior's strength must be positive, got {strength}")
        self.prior, self.segment, self.strength = prior, segment, float(strength)
        self.propensity_draws = int(propensity_draws)
        self.counts: dict[Hashable, np.ndarray] = {}
        self.wins: dict[Hashable, np.ndarray] = {}

    def _evidence(self, key: Hashable, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        top = int(cands.max()) + 1
        if key not in self.counts or len(self.counts[key]) < top:
            size = max(top, 2 * len(self.counts.get(key, ())), 64)
            for table in (self.counts, self.wins):
                grown = np.zeros(size)
                old = table.get(key, np.zeros(0))
                grown[:len(old)] = old
                table[key] = grown
        return self.counts[key][cands], self.wins[key][cands]

    def posterior(self, ctx: Context, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = np.clip(np.asarray(self.prior(ctx, cands), dtype=np.float64), 1e-3, 1 - 1e-3)
        n, w = self._evidence(self.segment(ctx), cands)
        return self.strength * p + w, self.strength * (1 - p) + n - w

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        a, b = self.posterior(ctx, cands)
        beta = self.rng.beta

        def sample(size: int | None, idx: np.ndarray | None) -> np.ndarray:
            return beta(a, b) if size is None else beta(a[idx], b[idx], size=(size, len(idx)))

        total = a + b
        mean, sd = a / total, np.sqrt(a * b / (total * total * (total + 1.0)))
        return sampled_slate(sample, len(cands), n, self.propensity_draws, mean - 8.0 * sd, mean + 8.0 * sd)

    def _update(self, ctx: Context, item: int, reward: float) -> None:
        key = self.segment(ctx)
        self._evidence(key, np.asarray([item]))
        self.counts[key][item] += 1.0
        self.wins[key][item] += min(max(reward, 0.0), 1.0)

    def set_evidence(self, key: Hashable, item: int, trials: float, wins: float) -> None:
        """Set one arm's evidence to totals counted elsewhere (the store sums every replica's
        rewards); ``n_updates`` moves by the trials this adds."""
        self._evidence(key, np.asarray([item]))
        self.n_updates += int(round(trials - self.counts[key][item]))
        self.counts[key][item], self.wins[key][item] = float(trials), float(wins)

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray,
                             draws: int = 2000) -> np.ndarray:
        cands = as_candidates(candidates)
        a, b = self.posterior(ctx, cands)
        winners = np.argmax(self.rng.beta(a, b, size=(draws, len(cands))), axis=1)
        return np.bincount(winners, minlength=len(cands)) / draws
