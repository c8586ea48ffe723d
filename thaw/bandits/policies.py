"""Context-free bandit policies over item ids: random, epsilon-greedy, UCB1, Thompson sampling.

Every policy answers ``select(ctx, candidates, n)`` with a slate of ``n`` distinct items and
learns from ``update(ctx, item, reward)``. Slates are filled slot by slot and every slot makes
its own exploration decision among the items not yet placed (epsilon-greedy flips its coin per
slot, Thompson draws a fresh posterior sample per slot), so a slate never explores "all at
once". Each decision records, per slot, the probability with which the policy picked that item
given the slots before it (its propensity): exact for random, epsilon-greedy and UCB (ties are
broken uniformly at random), a Monte-Carlo estimate for Thompson sampling. A policy's whole
state, random generator included, saves to safetensors + JSON and loads back bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from thaw.bandits.features import cosine_neighbours
from thaw.bandits.state import load_state, restore_rng, rng_state, save_state
from thaw.errors import ThawError
from thaw.models.base import Context

_POLICIES: dict[str, type[Policy]] = {}


@dataclass(frozen=True)
class Decision:
    """One slate: the items in slot order and, per slot, P(that item | the slots before it)."""

    items: np.ndarray
    propensities: np.ndarray
    n_candidates: int

    @property
    def slate_propensity(self) -> float:
        """Probability of the whole ordered slate under the policy."""
        return float(np.prod(self.propensities))


class DecisionLog:
    """Rows (decision, slot, user, item, propensity, n_candidates, reward) of every decision.

    Attach one to a policy (``policy.log = DecisionLog()``); rewards given to ``update`` are
    written into the newest row of that item still waiting for its reward.
    """

    columns = ("decision", "slot", "user", "item", "propensity", "n_candidates", "reward")

    def __init__(self) -> None:
        self.rows: list[list[Any]] = []
        self._pending: dict[int, int] = {}

    def record(self, decision_no: int, ctx: Context, decision: Decision) -> None:
        user = -1 if ctx.user is None else int(ctx.user)
        for slot, (item, p) in enumerate(zip(decision.items, decision.propensities, strict=False)):
            self._pending[int(item)] = len(self.rows)
            self.rows.append([decision_no, slot, user, int(item), float(p), decision.n_candidates, np.nan])

    def reward(self, item: int, reward: float) -> None:
        row = self._pending.pop(int(item), None)
        if row is not None:
            self.rows[row][6] = float(reward)

    def __len__(self) -> int:
        return len(self.rows)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=list(self.columns))

    def write_csv(self, path: str | Path) -> None:
        self.to_frame().to_csv(path, index=False)


def as_candidates(candidates: Sequence[int] | np.ndarray) -> np.ndarray:
    """Candidates as a 1-d int64 array of distinct ids, first occurrence order kept."""
    arr = np.asarray(candidates, dtype=np.int64).reshape(-1)
    if arr.size == 0:
        raise ThawError("a bandit needs at least one candidate item")
    if arr.min() < 0:
        raise ThawError("candidate item ids must be non-negative internal ids")
    if len(arr) > 1 and not np.all(arr[1:] > arr[:-1]):  # sorted input is distinct: skip the sort
        _, first = np.unique(arr, return_index=True)
        if len(first) != len(arr):
            arr = arr[np.sort(first)]
    return arr


class Policy:
    """Base class. Subclasses implement ``_decide``, ``_update`` and ``action_probabilities``."""

    name: ClassVar[str] = ""

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.n_decisions = 0
        self.n_updates = 0
        self.last: Decision | None = None
        self.log: DecisionLog | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            _POLICIES[cls.name] = cls

    # --- the bandit protocol ---------------------------------------------------------------

    def select(self, ctx: Context, candidates: Sequence[int] | np.ndarray, n: int = 1) -> np.ndarray:
        """Items for the first ``n`` slots (fewer if there are fewer candidates)."""
        return self.decide(ctx, candidates, n).items

    def decide(self, ctx: Context, candidates: Sequence[int] | np.ndarray, n: int = 1) -> Decision:
        """Like ``select`` but returns the items with their per-slot propensities."""
        cands = as_candidates(candidates)
        if n < 1:
            raise ThawError(f"a slate needs at least one slot, got n={n}")
        n = min(int(n), len(cands))
        pos, props = self._decide(ctx, cands, n)
        decision = Decision(cands[np.asarray(pos, dtype=np.int64)], np.asarray(props, dtype=np.float64), len(cands))
        self.n_decisions += 1
        self.last = decision
        if self.log is not None:
            self.log.record(self.n_decisions, ctx, decision)
        return decision

    def update(self, ctx: Context, item: int, reward: float) -> None:
        """Learn the reward the user gave to ``item`` (which this or another policy showed)."""
        reward = float(reward)
        if not np.isfinite(reward):
            raise ThawError(f"reward for item {item} is not a finite number: {reward}")
        item = int(item)
        if item < 0:
            raise ThawError(f"item ids are non-negative internal ids, got {item}")
        self._update(ctx, item, reward)
        self.n_updates += 1
        if self.log is not None:
            self.log.reward(item, reward)

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        """P(each candidate fills the first slot) under the current state; sums to one."""
        raise NotImplementedError

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        raise NotImplementedError

    def _update(self, ctx: Context, item: int, reward: float) -> None:
        raise NotImplementedError

    # --- cold arms ---------------------------------------------------------------------------

    def known_arms(self) -> np.ndarray:
        """Items this policy has evidence about (observations or a warm start)."""
        return np.empty(0, dtype=np.int64)

    def add_arm(self, item: int, sources: np.ndarray, weights: np.ndarray) -> bool:
        """Give a new arm a prior blended from ``sources`` (weights sum to one); False if not supported."""
        return False

    def warm_start(self, item: int, item_table: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Warm-start ``item``'s arm from its ``k`` most content-similar known arms.

        ``item_table`` holds content features (genres, year, ... or embeddings) by item id.
        Returns the neighbours used and their weights (empty if none was similar or the arm
        already has its own observations).
        """
        item = int(item)
        if not 0 <= item < len(item_table):
            raise ThawError(f"item {item} has no row in the item feature table")
        known = self.known_arms()
        known = known[known != item]
        nbrs, weights = cosine_neighbours(item_table[item], item_table, known, k)
        if len(nbrs) and self.add_arm(item, nbrs, weights):
            return nbrs, weights
        return np.empty(0, dtype=np.int64), np.empty(0)

    # --- state -----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-able) that rebuild an equivalent fresh policy."""
        return {"seed": self.seed}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        pass

    @classmethod
    def build(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Self:
        return cls(**config)

    def save(self, path: str | Path) -> Path:
        """Write the policy (configuration, learnt state, random state) to the folder ``path``."""
        meta = {"policy": self.name, "config": self.config(), "rng": rng_state(self.rng),
                "n_decisions": self.n_decisions, "n_updates": self.n_updates}
        return save_state(path, self.arrays(), meta)

    @staticmethod
    def load(path: str | Path) -> Policy:
        """Rebuild a saved policy of any kind; it continues exactly where it was saved."""
        arrays, meta = load_state(path)
        cls = _POLICIES.get(meta.get("policy", ""))
        if cls is None:
            raise ThawError(f"{path}: unknown policy '{meta.get('policy')}'")
        policy = cls.build(meta["config"], arrays)
        policy.set_arrays(arrays)
        policy.rng = restore_rng(meta["rng"])
        policy.n_decisions = int(meta["n_decisions"])
        policy.n_updates = int(meta["n_updates"])
        return policy

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if not isinstance(v, dict))
        return f"{type(self).__name__}({args})"


def policy_class(name: str) -> type[Policy]:
    if name not in _POLICIES:
        raise ThawError(f"unknown policy '{name}'; known: {', '.join(sorted(_POLICIES))}")
    return _POLICIES[name]


# --- helpers -------------------------------------------------------------------------------

def _argmax_random(values: np.ndarray, avail: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """Index of the largest available value (ties uniformly at random) and the number of ties."""
    v = np.where(avail, values, -np.inf)
    top = v.max()
    ties = np.flatnonzero(v == top) if top > -np.inf else np.flatnonzero(avail)
    if len(ties) == 1:
        return int(ties[0]), 1
    return int(ties[rng.integers(len(ties))]), len(ties)


def _index_slate(values: np.ndarray, n: int, rng: np.random.Generator) -> tuple[list[int], list[float]]:
    """Slots filled greedily by ``values``; propensity 1/ties per slot."""
    avail = np.ones(len(values), dtype=bool)
    pos, props = [], []
    for _ in range(n):
        j, ties = _argmax_random(values, avail, rng)
        avail[j] = False
        pos.append(j)
        props.append(1.0 / ties)
    return pos, props


Sampler = Callable[[int | None, np.ndarray | None], np.ndarray]
"""``sample(None, None)``: one draw of every candidate's score, shape (m,); ``sample(D, idx)``:
D draws of the candidates at positions ``idx`` only, shape (D, len(idx))."""


def sampled_slate(sample: Sampler, m: int, n: int, draws: int, low: np.ndarray | None = None,
                  high: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """Fill ``n`` slots from posterior draws: each slot takes the best remaining item of a fresh draw.

    A slot's propensity is (1 + #extra draws choosing the same item) / (1 + draws): the draw
    that chose it counts as one sample, so the estimate is never zero. With plausible ranges
    ``low``/``high`` (e.g. posterior mean -/+ several sd), the extra draws only cover the
    candidates that can plausibly win (``high`` >= the best remaining ``low``): the others'
    chance of winning is negligible, and skipping them makes the estimate cheap on large
    catalogues once the posterior has concentrated. ``draws=0`` skips the estimate (NaN).
    """
    avail = np.ones(m, dtype=bool)
    pos, props = [], []
    for _ in range(n):
        j = int(np.argmax(np.where(avail, sample(None, None), -np.inf)))
        p = float("nan")  # draws == 0: the caller chose not to estimate propensities
        if draws > 0:
            p = 1.0
            if low is not None and high is not None:
                contenders = avail & (high >= low[avail].max())
                contenders[j] = True
            else:
                contenders = avail
            idx = np.flatnonzero(contenders)
            if len(idx) > 1:
                winners = np.argmax(sample(draws, idx), axis=1)
                p = (1.0 + int(np.count_nonzero(idx[winners] == j))) / (1.0 + draws)
        avail[j] = False
        pos.append(j)
        props.append(p)
    return pos, props


def _normal_sampler(rng: np.random.Generator, mean: np.ndarray,
                    sd: np.ndarray) -> tuple[Sampler, np.ndarray, np.ndarray]:
    """Independent normal scores, with mean -/+ 6 sd as the plausible range."""
    normal = rng.standard_normal

    def sample(size: int | None, idx: np.ndarray | None) -> np.ndarray:
        if size is None:
            return mean + sd * normal(len(mean))
        return mean[idx] + sd[idx] * normal((size, len(idx)))
    return sample, mean - 6.0 * sd, mean + 6.0 * sd


def _index_probabilities(values: np.ndarray) -> np.ndarray:
    top = values.max()
    ties = values == top
    return ties / ties.sum()


# --- policies ------------------------------------------------------------------------------

class RandomPolicy(Policy):
    """Uniform at random among the candidates not yet placed: the logging policy replay wants."""

    name = "random"

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        m = len(cands)
        pos = self.rng.choice(m, size=n, replace=False)
        return [int(p) for p in pos], [1.0 / (m - k) for k in range(n)]

    def _update(self, ctx: Context, item: int, reward: float) -> None:
        pass

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        m = len(as_candidates(candidates))
        return np.full(m, 1.0 / m)


class CounterPolicy(Policy):
    """Per-arm counters (pulls, reward sum, squared-reward sum) in arrays indexed by item id.

    ``reward_range`` maps rewards to [0, 1] for UCB1 and Beta Thompson sampling (clicks are
    already in [0, 1]; ratings 1..5 use (1, 5)). ``warm_max`` caps the pseudo-observations a
    warm-started arm inherits from its neighbours, so fresh evidence soon outweighs them.
    """

    def __init__(self, seed: int = 0, reward_range: tuple[float, float] = (0.0, 1.0),
                 warm_max: float = 5.0) -> None:
        super().__init__(seed)
        lo, hi = float(reward_range[0]), float(reward_range[1])
        if not hi > lo:
            raise ThawError(f"reward_range must have low < high, got {reward_range}")
        self.reward_range = (lo, hi)
        self.warm_max = float(warm_max)
        self.counts = np.zeros(0)
        self.sums = np.zeros(0)
        self.sumsq = np.zeros(0)

    def _ensure(self, top: int) -> None:
        if top < len(self.counts):
            return
        size = max(top + 1, 2 * len(self.counts), 64)
        for attr in ("counts", "sums", "sumsq"):
            old = getattr(self, attr)
            new = np.zeros(size)
            new[: len(old)] = old
            setattr(self, attr, new)

    def _stats(self, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._ensure(int(cands.max()))
        return self.counts[cands], self.sums[cands], self.sumsq[cands]

    def _unit(self, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Reward sums mapped to the [0, 1] scale."""
        lo, hi = self.reward_range
        if lo == 0.0 and hi == 1.0:
            return np.minimum(np.maximum(sums, 0.0), counts)
        return np.minimum(np.maximum((sums - lo * counts) / (hi - lo), 0.0), counts)

    def _update(self, ctx: Context, item: int, reward: float) -> None:
        self._ensure(item)
        self.counts[item] += 1.0
        self.sums[item] += reward
        self.sumsq[item] += reward * reward

    def means(self, items: np.ndarray, default: float = 0.0) -> np.ndarray:
        """Empirical mean reward per item; ``default`` where an arm has no observations."""
        items = np.asarray(items, dtype=np.int64)
        counts, sums, _ = self._stats(items)
        out = np.full(len(items), float(default))
        np.divide(sums, counts, out=out, where=counts > 0)
        return out

    def known_arms(self) -> np.ndarray:
        return np.flatnonzero(self.counts > 0)

    def add_arm(self, item: int, sources: np.ndarray, weights: np.ndarray) -> bool:
        self._ensure(max(int(item), int(np.max(sources))))
        if self.counts[item] > 0:
            return False
        n = self.counts[sources]
        ok = n > 0
        if not ok.any():
            return False
        w = weights[ok] / weights[ok].sum()
        mean = float(w @ (self.sums[sources][ok] / n[ok]))
        second = float(w @ (self.sumsq[sources][ok] / n[ok]))
        pseudo = min(float(w @ n[ok]), self.warm_max)
        self.counts[item] = pseudo
        self.sums[item] = pseudo * mean
        self.sumsq[item] = pseudo * second
        return True

    def config(self) -> dict[str, Any]:
        return {**super().config(), "reward_range": list(self.reward_range), "warm_max": self.warm_max}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "sums": self.sums, "sumsq": self.sumsq}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.counts = arrays["counts"].astype(np.float64).copy()
        self.sums = arrays["sums"].astype(np.float64).copy()
        self.sumsq = arrays["sumsq"].astype(np.float64).copy()

    @classmethod
    def build(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Self:
        config = dict(config)
        if "reward_range" in config:
            config["reward_range"] = tuple(config["reward_range"])
        return cls(**config)


class EpsilonGreedy(CounterPolicy):
    """Per slot: with probability epsilon a uniformly random remaining candidate, else the best mean.

    Fixed epsilon (``decay=None``) keeps exploring forever, so its regret grows linearly.
    With ``decay=c`` epsilon at update count t is min(epsilon, c * K / t) for K candidates
    (Auer et al. 2002's epsilon_n-greedy), which explores ever less. Arms never pulled are
    valued ``initial``.
    """

    name = "egreedy"

    def __init__(self, epsilon: float = 0.1, decay: float | None = None, initial: float = 0.0,
                 seed: int = 0, reward_range: tuple[float, float] = (0.0, 1.0), warm_max: float = 5.0) -> None:
        super().__init__(seed, reward_range, warm_max)
        if not 0.0 <= epsilon <= 1.0:
            raise ThawError(f"epsilon must be in [0, 1], got {epsilon}")
        if decay is not None and decay <= 0:
            raise ThawError(f"decay must be positive, got {decay}")
        self.epsilon, self.decay, self.initial = float(epsilon), decay, float(initial)

    def current_epsilon(self, n_candidates: int) -> float:
        if self.decay is None:
            return self.epsilon
        return min(self.epsilon, self.decay * n_candidates / max(self.n_updates, 1))

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        est = self.means(cands, self.initial)
        m = len(cands)
        eps = self.current_epsilon(m)
        avail = np.ones(m, dtype=bool)
        pos, props = [], []
        for k in range(n):
            left = m - k
            vals = np.where(avail, est, -np.inf)
            top = vals.max()
            best = np.flatnonzero(vals == top)
            if self.rng.random() < eps:
                free = np.flatnonzero(avail)
                j = int(free[self.rng.integers(left)])
            else:
                j = int(best[self.rng.integers(len(best))]) if len(best) > 1 else int(best[0])
            p = eps / left + ((1.0 - eps) / len(best) if vals[j] == top else 0.0)
            avail[j] = False
            pos.append(j)
            props.append(p)
        return pos, props

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        cands = as_candidates(candidates)
        est = self.means(cands, self.initial)
        eps = self.current_epsilon(len(cands))
        return eps / len(cands) + (1.0 - eps) * _index_probabilities(est)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "epsilon": self.epsilon, "decay": self.decay, "initial": self.initial}


class UCB1(CounterPolicy):
    """Auer et al. (2002): mean + sqrt(2 ln N / n_a) on rewards scaled to [0, 1]; untried arms first."""

    name = "ucb1"

    def __init__(self, c: float = 2.0, seed: int = 0, reward_range: tuple[float, float] = (0.0, 1.0),
                 warm_max: float = 5.0) -> None:
        super().__init__(seed, reward_range, warm_max)
        self.c = float(c)

    def indices(self, cands: np.ndarray) -> np.ndarray:
        counts, sums, _ = self._stats(cands)
        total = max(float(self.n_updates), 1.0)
        out = np.full(len(cands), np.inf)
        seen = counts > 0
        c = counts[seen]
        out[seen] = self._unit(sums[seen], c) / c + np.sqrt(self.c * np.log(total) / c)
        return out

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        return _index_slate(self.indices(cands), n, self.rng)

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        return _index_probabilities(self.indices(as_candidates(candidates)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "c": self.c}


class _SamplingPolicy(CounterPolicy):
    """Thompson sampling skeleton: a fresh posterior draw per slot, propensities by Monte Carlo.

    A slot's propensity is estimated from the draw that chose it plus ``propensity_draws``
    independent draws: (1 + #draws choosing the same item) / (1 + propensity_draws), never zero.
    ``propensity_draws=0`` skips the estimate (propensities are NaN) for speed.
    """

    def __init__(self, seed: int = 0, reward_range: tuple[float, float] = (0.0, 1.0), warm_max: float = 5.0,
                 propensity_draws: int = 32) -> None:
        super().__init__(seed, reward_range, warm_max)
        self.propensity_draws = int(propensity_draws)

    def _sampler(self, cands: np.ndarray) -> tuple[Sampler, np.ndarray, np.ndarray]:
        """Posterior draws of the candidates' mean rewards, and each one's plausible range."""
        raise NotImplementedError

    def _sample(self, cands: np.ndarray, size: int | None) -> np.ndarray:
        return self._sampler(cands)[0](size, None if size is None else np.arange(len(cands)))

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        sample, low, high = self._sampler(cands)
        return sampled_slate(sample, len(cands), n, self.propensity_draws, low, high)

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray,
                             draws: int = 2000) -> np.ndarray:
        """Monte-Carlo estimate from ``draws`` posterior samples (uses this policy's generator)."""
        cands = as_candidates(candidates)
        winners = np.argmax(self._sample(cands, draws), axis=1)
        return np.bincount(winners, minlength=len(cands)) / draws

    def config(self) -> dict[str, Any]:
        return {**super().config(), "propensity_draws": self.propensity_draws}


class ThompsonBeta(_SamplingPolicy):
    """Beta-Bernoulli Thompson sampling for clicks; a reward r in [0, 1] adds r successes, 1-r failures."""

    name = "thompson"

    def __init__(self, prior: tuple[float, float] = (1.0, 1.0), seed: int = 0,
                 reward_range: tuple[float, float] = (0.0, 1.0), warm_max: float = 5.0,
                 propensity_draws: int = 32) -> None:
        super().__init__(seed, reward_range, warm_max, propensity_draws)
        if prior[0] <= 0 or prior[1] <= 0:
            raise ThawError(f"Beta prior parameters must be positive, got {prior}")
        self.prior = (float(prior[0]), float(prior[1]))

    def posterior(self, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts, sums, _ = self._stats(cands)
        wins = self._unit(sums, counts)
        return self.prior[0] + wins, self.prior[1] + counts - wins

    def _sampler(self, cands: np.ndarray) -> tuple[Sampler, np.ndarray, np.ndarray]:
        a, b = self.posterior(cands)
        beta = self.rng.beta

        def sample(size: int | None, idx: np.ndarray | None) -> np.ndarray:
            if size is None:
                return beta(a, b)
            return beta(a[idx], b[idx], size=(size, len(idx)))
        # Plausible range: mean -/+ 8 sd (wide, because skewed Beta tails are heavier than normal).
        total = a + b
        mean, sd = a / total, np.sqrt(a * b / (total * total * (total + 1.0)))
        return sample, mean - 8.0 * sd, mean + 8.0 * sd

    def config(self) -> dict[str, Any]:
        return {**super().config(), "prior": list(self.prior)}

    @classmethod
    def build(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Self:
        config = dict(config)
        config["prior"] = tuple(config["prior"])
        config["reward_range"] = tuple(config["reward_range"])
        return cls(**config)


class ThompsonGaussian(_SamplingPolicy):
    """Gaussian Thompson sampling for ratings: prior N(prior_mean, prior_sd^2), known noise_sd."""

    name = "thompson-gaussian"

    def __init__(self, prior_mean: float = 3.0, prior_sd: float = 1.0, noise_sd: float = 1.0, seed: int = 0,
                 warm_max: float = 5.0, propensity_draws: int = 32) -> None:
        super().__init__(seed, (0.0, 1.0), warm_max, propensity_draws)
        if prior_sd <= 0 or noise_sd <= 0:
            raise ThawError("prior_sd and noise_sd must be positive")
        self.prior_mean, self.prior_sd, self.noise_sd = float(prior_mean), float(prior_sd), float(noise_sd)

    def posterior(self, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of each candidate's mean reward."""
        counts, sums, _ = self._stats(cands)
        precision = 1.0 / self.prior_sd**2 + counts / self.noise_sd**2
        mean = (self.prior_mean / self.prior_sd**2 + sums / self.noise_sd**2) / precision
        return mean, 1.0 / np.sqrt(precision)

    def _sampler(self, cands: np.ndarray) -> tuple[Sampler, np.ndarray, np.ndarray]:
        mean, sd = self.posterior(cands)
        return _normal_sampler(self.rng, mean, sd)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.pop("reward_range")
        return {**cfg, "prior_mean": self.prior_mean, "prior_sd": self.prior_sd, "noise_sd": self.noise_sd}
