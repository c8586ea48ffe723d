"""Regret simulations: synthetic bandits for the tests and an ML-100k simulator for the benchmark.

A ``BanditWorld`` holds the expected reward of every catalogue item for every user type. Each
round a user arrives (seeded), the policy picks one item from the round's candidates, sees a
reward, and is charged the regret ``best expected reward among the candidates - expected reward
of its pick`` against the oracle that knows every user's true rewards. Policies are compared on
common random numbers: for a given seed every policy meets the same users in the same order
and the same world.

The ML-100k world (``ml100k_world``) is a *simulation*, not logged truth: see its docstring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from thaw.bandits.features import FeatureMap, JoinedFeatures, ProfileFeatures, TableEncoder, VectorFeatures
from thaw.bandits.linear import LinearTS, LinUCB
from thaw.bandits.policies import UCB1, EpsilonGreedy, Policy, RandomPolicy, ThompsonBeta
from thaw.compute import one_thread
from thaw.data.schema import Dataset, Interactions
from thaw.errors import ThawError
from thaw.models.base import Context

POLICY_NAMES = ("random", "egreedy", "egreedy-decay", "ucb1", "thompson", "linucb", "lints")
EXTRA_POLICY_NAMES = ("linucb-joined", "lints-joined")


@dataclass
class BanditWorld:
    """Expected rewards ``expected[u, j]`` of catalogue item ``items[j]`` for user type ``u``.

    ``noise`` says how a reward is drawn: ``"bernoulli-round"`` (a fresh Bernoulli draw each
    round, for synthetic click bandits), ``"bernoulli-pair"`` (one Bernoulli draw per
    (user, item) and seed, fixed for the whole run: the user's true reward, which the oracle
    knows), ``"gaussian"`` (expected + N(0, noise_sd^2)) or ``"none"``.
    """

    expected: np.ndarray
    items: np.ndarray
    contexts: Sequence[Context]
    noise: str = "bernoulli-round"
    noise_sd: float = 0.1
    user_probs: np.ndarray | None = None
    candidates_per_round: int | None = None
    user_features: FeatureMap | None = None
    item_table: np.ndarray | None = None
    pair_user_features: FeatureMap | None = None
    """User part of the joined (user x item) features; ``user_features`` when None."""
    description: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.expected = np.asarray(self.expected, dtype=np.float64)
        self.items = np.asarray(self.items, dtype=np.int64)
        if self.expected.shape != (len(self.contexts), len(self.items)):
            raise ThawError(f"expected rewards have shape {self.expected.shape}, "
                            f"want ({len(self.contexts)} users, {len(self.items)} items)")
        if self.noise not in ("bernoulli-round", "bernoulli-pair", "gaussian", "none"):
            raise ThawError(f"unknown reward noise '{self.noise}'")

    @property
    def n_users(self) -> int:
        return len(self.contexts)


@dataclass
class RunResult:
    regret: np.ndarray
    """Cumulative regret after each round, shape (horizon,)."""
    reward: float
    seconds: float
    """Time spent inside the policy's select and update calls."""

    @property
    def decisions_per_second(self) -> float:
        return len(self.regret) / self.seconds if self.seconds > 0 else float("inf")


def _draws(world: BanditWorld, horizon: int, seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """The world's generator for ``seed``, the arriving users and the true rewards (the
    fixed per-pair draws under "bernoulli-pair", else the expected rewards)."""
    env = np.random.default_rng([int(seed), 0xB4D17])
    arrivals = env.choice(world.n_users, size=horizon, p=world.user_probs)
    truth = world.expected
    if world.noise == "bernoulli-pair":
        truth = (env.random(truth.shape) < truth).astype(np.float64)
    return env, arrivals, truth


def best_fixed_item_regret(world: BanditWorld, horizon: int, seed: int) -> float:
    """Regret per round of the best single item shown to every arriving user, against the
    oracle, on exactly the users and rewards ``run_policy`` draws for ``seed``: the floor a
    policy that ignores who the user is cannot go below (all items candidates every round)."""
    _, arrivals, truth = _draws(world, horizon, seed)
    visits = np.bincount(arrivals, minlength=world.n_users).astype(np.float64)
    per_item = visits @ (truth.max(axis=1)[:, None] - truth) / horizon
    return float(per_item.min())


def run_policy(world: BanditWorld, policy: Policy, horizon: int, seed: int,
               tick: Callable[[int], None] | None = None) -> RunResult:
    """Play ``horizon`` rounds of ``world`` with ``policy``; the world's randomness comes from ``seed``."""
    env, arrivals, truth = _draws(world, horizon, seed)
    n_users, n_items = world.expected.shape
    uniforms = env.random(horizon)
    gauss = env.standard_normal(horizon) if world.noise == "gaussian" else None
    col_of = np.full(int(world.items.max()) + 1, -1, dtype=np.int64)
    col_of[world.items] = np.arange(n_items)
    per_round = world.candidates_per_round
    best_all = truth.max(axis=1)
    regret = np.empty(horizon)
    total_reward = 0.0
    spent = 0.0
    clock = time.perf_counter
    for t in range(horizon):
        u = int(arrivals[t])
        if per_round is not None and per_round < n_items:
            cols = env.choice(n_items, size=per_round, replace=False)
            cands = world.items[cols]
            best = truth[u, cols].max()
        else:
            cands = world.items
            best = best_all[u]
        ctx = world.contexts[u]
        start = clock()
        item = int(policy.select(ctx, cands, 1)[0])
        spent += clock() - start
        mu = truth[u, col_of[item]]
        if world.noise == "bernoulli-round":
            r = 1.0 if uniforms[t] < mu else 0.0
        elif world.noise == "gaussian":
            r = mu + world.noise_sd * gauss[t]
        else:
            r = mu
        start = clock()
        policy.update(ctx, item, r)
        spent += clock() - start
        total_reward += r
        regret[t] = best - mu
        if tick is not None and (t + 1) % 1000 == 0:
            tick(1000)
    if tick is not None and horizon % 1000:
        tick(horizon % 1000)
    return RunResult(np.cumsum(regret), total_reward, spent)


@dataclass
class SimResult:
    horizon: int
    seeds: list[int]
    regret: dict[str, np.ndarray]
    """Per policy, cumulative regret of shape (n_seeds, horizon)."""
    decisions_per_second: dict[str, list[float]]

    def table(self, ts: Sequence[int] | None = None) -> pd.DataFrame:
        """policy, t, regret_mean, regret_low, regret_high (95% t-interval over seeds)."""
        if ts is None:
            ts = regret_grid(self.horizon)
        rows = []
        for name, curves in self.regret.items():
            for t in ts:
                mean, low, high = mean_band(curves[:, t - 1])
                rows.append((name, int(t), mean, low, high))
        return pd.DataFrame(rows, columns=["policy", "t", "regret_mean", "regret_low", "regret_high"])


def mean_band(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t confidence interval (the mean itself when there is one value)."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def regret_grid(horizon: int, points: int = 200) -> list[int]:
    """Rounds at which to report regret: evenly spaced, plus 1,000 / 10,000 / 100,000 and the end."""
    grid = set(np.unique(np.linspace(1, horizon, points).astype(int)).tolist())
    grid.update(t for t in (1_000, 10_000, 100_000) if t <= horizon)
    grid.add(horizon)
    return sorted(grid)


def simulate(world: BanditWorld, factories: Mapping[str, Callable[[int], Policy]], horizon: int,
             seeds: Sequence[int], progress: bool = True) -> SimResult:
    """Run every policy on every seed (same users, same world per seed) and collect regret."""
    if horizon < 1:
        raise ThawError(f"horizon must be at least 1, got {horizon}")
    if not seeds:
        raise ThawError("need at least one seed")
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=horizon * len(seeds) * len(factories), unit="round", desc="bandit-sim")
    regret: dict[str, np.ndarray] = {}
    speed: dict[str, list[float]] = {}
    try:
        with one_thread():
            for name, factory in factories.items():
                curves, rates = [], []
                for seed in seeds:
                    if bar is not None:
                        bar.set_postfix_str(f"{name} seed {seed}")
                    result = run_policy(world, factory(int(seed)), horizon, int(seed),
                                        None if bar is None else bar.update)
                    curves.append(result.regret)
                    rates.append(result.decisions_per_second)
                regret[name] = np.stack(curves)
                speed[name] = rates
    finally:
        if bar is not None:
            bar.close()
    return SimResult(horizon, [int(s) for s in seeds], regret, speed)


def make_policy(name: str, world: BanditWorld, seed: int) -> Policy:
    """The simulator's policy by CLI name, with the defaults the benchmark reports."""
    if name == "random":
        return RandomPolicy(seed=seed)
    if name == "egreedy":
        return EpsilonGreedy(epsilon=0.1, seed=seed)
    if name == "egreedy-decay":
        return EpsilonGreedy(epsilon=1.0, decay=1.0, seed=seed)
    if name == "ucb1":
        return UCB1(seed=seed)
    if name == "thompson":
        return ThompsonBeta(seed=seed)
    if name in ("linucb", "lints", "linucb-joined", "lints-joined"):
        if world.user_features is None:
            raise ThawError(f"policy '{name}' needs context features, and this world has none")
        features: FeatureMap = world.user_features
        shared = name.endswith("-joined")
        if shared:
            if world.item_table is None:
                raise ThawError(f"policy '{name}' needs item features, and this world has none")
            features = JoinedFeatures(world.pair_user_features or world.user_features, world.item_table, how="outer")
        cls = LinUCB if name.startswith("linucb") else LinearTS
        return cls(features, shared=shared, seed=seed)
    raise ThawError(f"unknown policy '{name}'; known: {', '.join(POLICY_NAMES + EXTRA_POLICY_NAMES)}")


def parse_policies(spec: str) -> list[str]:
    names = [p.strip() for p in spec.split(",") if p.strip()]
    if not names:
        raise ThawError("no policies given")
    known = POLICY_NAMES + EXTRA_POLICY_NAMES
    for n in names:
        if n not in known:
            raise ThawError(f"unknown policy '{n}'; known: {', '.join(known)}")
    if len(set(names)) != len(names):
        raise ThawError(f"a policy is named twice in '{spec}'")
    return names


# --- synthetic worlds ---------------------------------------------------------------------

def bernoulli_world(means: Sequence[float]) -> BanditWorld:
    """A stationary K-armed Bernoulli bandit with one (empty) context; items are 0..K-1."""
    means = np.asarray(means, dtype=np.float64)
    return BanditWorld(means[None, :], np.arange(len(means)), [Context(user=None)],
                       noise="bernoulli-round", description=f"{len(means)}-armed Bernoulli bandit")


def linear_world(thetas: np.ndarray, contexts: np.ndarray, noise_sd: float = 0.1) -> BanditWorld:
    """Arm a's reward for context x is x . thetas[a] + N(0, noise_sd^2); contexts arrive uniformly."""
    thetas = np.asarray(thetas, dtype=np.float64)
    contexts = np.asarray(contexts, dtype=np.float64)
    ctxs = [Context(user=None, profile={"x": x}) for x in contexts]
    return BanditWorld(contexts @ thetas.T, np.arange(len(thetas)), ctxs, noise="gaussian", noise_sd=noise_sd,
                       user_features=VectorFeatures(contexts.shape[1]),
                       description=f"linear bandit, {len(thetas)} arms, d={contexts.shape[1]}")


# --- the ML-100k simulator ------------------------------------------------------------------

def like_probability(predicted_rating: np.ndarray, midpoint: float = 3.5, slope: float = 2.0) -> np.ndarray:
    """P(a user would rate >= 4) from a predicted rating: sigmoid(slope * (rating - midpoint))."""
    return 1.0 / (1.0 + np.exp(-slope * (np.asarray(predicted_rating, dtype=np.float64) - midpoint)))


def ml100k_world(dataset: Dataset | None = None, *, n_items: int = 300, holdout_frac: float = 0.2,
                 seed: int = 0, world_model: str = "mf", embedding_dim: int = 8,
                 user_columns: Sequence[str] = ("gender", "age", "occupation")) -> BanditWorld:
    """A bandit world built from MovieLens-100k. It is a simulation, not logged truth.

    * Users: a seeded ``holdout_frac`` of users is held out; only they arrive, uniformly at
      random, as cold users (``Context(user=None, profile=...)``: the policies see their gender,
      age and occupation, never their ratings).
    * Catalogue: the ``n_items`` items most rated by the *other* (warm) users; every round all
      of them are candidates, so counters cover the whole catalogue.
    * True reward of (user, item): 1 if the user rated the item 4 or 5, 0 if they rated it 1-3.
      For items the user never rated, the model ``world_model`` (default "mf", the ALS matrix
      factorisation, fitted on ALL of ML-100k, the held-out users' ratings included) predicts a
      rating r, and the reward is a Bernoulli draw with p = sigmoid(2 (r - 3.5)), drawn once
      per (user, item) and seed and then fixed for the whole run.
    * The oracle knows each user's true rewards and shows, each round, the arriving user's
      best item; regret is the number of rounds in which the policy's pick was not liked
      although a liked item was available (both rewards are 0/1).
    * Features the policies may use: ``user_features`` (one-hot gender, age band, occupation
      and a bias) for the disjoint linear policies; for the joined (shared) ones, gender and age
      band crossed with ``embedding_dim`` item embeddings: the principal components of the item
      factors of a second "mf" fitted on the warm users only (held-out ratings never reach it).
    """
    from thaw.registry import make_model

    if dataset is None:
        from thaw.data.loaders import load_dataset
        dataset = load_dataset("ml-100k")
    if not 0.0 < holdout_frac < 1.0:
        raise ThawError(f"holdout_frac must be in (0, 1), got {holdout_frac}")
    rng = np.random.default_rng(seed)
    inter = dataset.interactions
    rated_users = np.unique(inter.user)
    n_hold = max(1, int(round(holdout_frac * len(rated_users))))
    held = np.sort(rng.permutation(rated_users)[:n_hold])
    is_held = np.isin(inter.user, held)
    popularity = np.bincount(inter.item[~is_held], minlength=dataset.n_items)
    catalogue = np.lexsort((np.arange(dataset.n_items), -popularity))[: min(n_items, dataset.n_items)]
    catalogue = np.sort(catalogue)

    model = make_model(world_model)
    model.fit(dataset)
    col_of = np.full(dataset.n_items, -1, dtype=np.int64)
    col_of[catalogue] = np.arange(len(catalogue))
    expected = np.empty((len(held), len(catalogue)))
    observed = 0
    for k, u in enumerate(held):
        predicted = np.asarray(model.predict(Context(user=int(u)), catalogue), dtype=np.float64)
        expected[k] = like_probability(predicted)
        rows = (inter.user == u) & (col_of[inter.item] >= 0)
        cols = col_of[inter.item[rows]]
        expected[k, cols] = (inter.rating[rows] >= 4).astype(np.float64)
        observed += len(cols)

    columns = [c for c in user_columns if c in dataset.user_features.columns]
    encoder = TableEncoder.fit(dataset.user_features, columns=columns)
    pair_encoder = TableEncoder.fit(dataset.user_features, columns=[c for c in ("gender", "age") if c in columns])
    contexts = [Context(user=None, profile=dataset.profile(int(u))) for u in held]
    item_table = _warm_item_embeddings(dataset, inter.take(~is_held), catalogue, embedding_dim)
    info = {"dataset": dataset.name, "held_out_users": int(len(held)), "catalogue_items": int(len(catalogue)),
            "observed_pairs": int(observed), "simulated_pairs": int(expected.size - observed),
            "mean_true_reward": float(expected.mean()),
            "world_model": world_model, "world_seed": int(seed), "user_feature_dim": encoder.dim,
            "joined_feature_dim": int(pair_encoder.dim * item_table.shape[1])}
    description = (f"ML-100k simulator: {len(held)} held-out users x {len(catalogue)} most-rated items; "
                   f"{observed} of {expected.size} rewards from real ratings (>= 4 is a like), the rest "
                   f"simulated by Bernoulli(sigmoid(2 (r - 3.5))) with r from '{world_model}' fitted on all data")
    return BanditWorld(expected, catalogue, contexts, noise="bernoulli-pair",
                       user_features=ProfileFeatures(encoder), item_table=item_table,
                       pair_user_features=ProfileFeatures(pair_encoder), description=description, info=info)


def _warm_item_embeddings(dataset: Dataset, warm: Interactions, catalogue: np.ndarray, dim: int) -> np.ndarray:
    """[1, top-``dim`` principal components of warm-only "mf" item factors], unit variance on the catalogue."""
    from thaw.registry import make_model

    factors = np.asarray(make_model("mf").fit(dataset.with_interactions(warm)).item_factors, dtype=np.float64)
    centre = factors[catalogue].mean(axis=0)
    _, _, vt = np.linalg.svd(factors[catalogue] - centre, full_matrices=False)
    proj = (factors - centre) @ vt[:dim].T
    proj /= proj[catalogue].std(axis=0) + 1e-12
    return np.hstack([np.ones((len(proj), 1)), proj])


def plot_regret(frame: pd.DataFrame, path: str, title: str = "Cumulative regret") -> None:
    """Regret curves with shaded 95% bands, one line per policy (PNG via the Agg backend)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for name, part in frame.groupby("policy", sort=False):
        part = part.sort_values("t")
        ax.plot(part["t"], part["regret_mean"], label=name, linewidth=1.6)
        ax.fill_between(part["t"], part["regret_low"], part["regret_high"], alpha=0.2)
    ax.set_xlabel("round t")
    ax.set_ylabel("cumulative regret")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def synthetic_world(n_segments: int = 5, n_items: int = 50, seed: int = 0) -> BanditWorld:
    """A small contextual click world for smoke runs: users of ``n_segments`` segments (one-hot
    features plus a bias), each segment with its own seeded click rate per item."""
    rng = np.random.default_rng(seed)
    rates = rng.beta(1.0, 3.0, size=(n_segments, n_items))
    contexts = [Context(user=None, profile={"x": np.concatenate([[1.0], np.eye(n_segments)[s]])})
                for s in range(n_segments)]
    item_table = rng.normal(size=(n_items, 4))
    return BanditWorld(rates, np.arange(n_items), contexts, noise="bernoulli-round",
                       user_features=VectorFeatures(n_segments + 1), item_table=item_table,
                       description=f"synthetic click world: {n_segments} user segments x {n_items} items, "
                                   f"click rates Beta(1, 3) drawn with seed {seed}",
                       info={"dataset": "synthetic", "world_seed": seed})
