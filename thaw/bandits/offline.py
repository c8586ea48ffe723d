"""Offline evaluation of bandit policies on logged data.

* ``replay`` (Li, Chu, Langford & Wang, WSDM 2011): walk the log, ask the policy what it would
  have shown, and keep only the events where it agrees with what was logged; the mean reward
  of the kept events estimates the policy's online reward. Unbiased only when the logging
  policy chose uniformly at random among the event's candidates: ``replay`` checks the log and
  warns (``NonUniformLoggingWarning``) when it looks otherwise.
* ``ips``, ``snips`` and ``doubly_robust``: inverse-propensity estimators for a fixed target
  policy on logs from any logging policy whose propensities were recorded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from thaw.bandits.policies import Policy, as_candidates
from thaw.compute import one_thread
from thaw.data.schema import Dataset
from thaw.errors import DataError, ThawError
from thaw.models.base import Context

RewardModel = Callable[[Context, np.ndarray], np.ndarray]


class NonUniformLoggingWarning(UserWarning):
    """The log does not look uniformly random, so replay's estimate may be biased."""


@dataclass(frozen=True)
class BanditLog:
    """Logged bandit events: what was shown (``items``), what it earned, and how it was chosen.

    ``candidates`` is one array per event (the items the logger chose among) or one shared
    catalogue; ``propensities`` is the logger's probability of each logged item (None when not
    recorded); ``contexts`` are per-event requests (None: built from ``users`` and ``profiles``).
    """

    items: np.ndarray
    rewards: np.ndarray
    users: np.ndarray | None = None
    propensities: np.ndarray | None = None
    candidates: Sequence[np.ndarray] | np.ndarray | None = None
    contexts: Sequence[Context] | None = None
    profiles: Mapping[int, Mapping] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        items = np.asarray(self.items, dtype=np.int64)
        rewards = np.asarray(self.rewards, dtype=np.float64)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "rewards", rewards)
        n = len(items)
        if len(rewards) != n:
            raise ThawError("a bandit log needs one reward per logged item")
        if self.users is not None:
            object.__setattr__(self, "users", np.asarray(self.users, dtype=np.int64))
        if self.propensities is not None:
            props = np.asarray(self.propensities, dtype=np.float64)
            if len(props) != n or not np.all((props > 0) & (props <= 1)):
                raise ThawError("propensities must be one per event, each in (0, 1]")
            object.__setattr__(self, "propensities", props)
        if self.candidates is None:
            object.__setattr__(self, "candidates", np.unique(items))
        elif not isinstance(self.candidates, np.ndarray) or self.candidates.dtype == object:
            if len(self.candidates) != n:
                raise ThawError("per-event candidate sets must be one per event")
        if self.contexts is not None and len(self.contexts) != n:
            raise ThawError("per-event contexts must be one per event")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def shared_candidates(self) -> bool:
        return isinstance(self.candidates, np.ndarray) and self.candidates.dtype != object

    def candidates_of(self, i: int) -> np.ndarray:
        return self.candidates if self.shared_candidates else np.asarray(self.candidates[i], dtype=np.int64)

    def context(self, i: int) -> Context:
        if self.contexts is not None:
            return self.contexts[i]
        user = None if self.users is None or self.users[i] < 0 else int(self.users[i])
        return Context(user=user, profile=self.profiles.get(user, {}) if user is not None else {})

    def take(self, index: np.ndarray) -> BanditLog:
        index = np.asarray(index)
        pick = (lambda seq: None if seq is None else [seq[i] for i in index])  # noqa: E731
        return BanditLog(
            self.items[index], self.rewards[index],
            None if self.users is None else self.users[index],
            None if self.propensities is None else self.propensities[index],
            self.candidates if self.shared_candidates else pick(self.candidates),
            pick(self.contexts), self.profiles, self.source)


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its standard error and 95% confidence interval."""

    name: str
    value: float
    se: float
    n: int
    low: float = float("nan")
    high: float = float("nan")

    @classmethod
    def from_terms(cls, name: str, value: float, terms: np.ndarray) -> Estimate:
        n = len(terms)
        se = float(np.std(terms, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        z = stats.norm.ppf(0.975)
        return cls(name, float(value), se, n, float(value - z * se), float(value + z * se))


@dataclass(frozen=True)
class ReplayResult:
    estimate: Estimate
    n_events: int
    matched: int
    uniform: bool
    message: str

    @property
    def value(self) -> float:
        return self.estimate.value


# --- is the log uniform? ------------------------------------------------------------------

def logging_uniformity(log: BanditLog, *, rtol: float = 0.05, alpha: float = 1e-3) -> tuple[bool, str]:
    """Whether the log looks uniformly random over each event's candidates, and why.

    With propensities: every propensity must be 1/|candidates| (within ``rtol``). Without: a
    chi-square test of the logged items' counts against uniform over the shared catalogue
    (rejecting at level ``alpha``); per-event candidate sets without propensities cannot be
    checked and are reported as unverified.
    """
    n = len(log)
    if n == 0:
        return True, "empty log"
    if log.propensities is not None:
        sizes = (np.full(n, len(log.candidates)) if log.shared_candidates
                 else np.asarray([len(c) for c in log.candidates]))
        expected = 1.0 / sizes
        bad = ~np.isclose(log.propensities, expected, rtol=rtol, atol=0.0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            return False, (f"{int(bad.sum())} of {n} logged propensities differ from 1/|candidates| "
                           f"(first: event {i}, propensity {log.propensities[i]:.4g} vs {expected[i]:.4g}); "
                           f"propensities range {log.propensities.min():.4g}..{log.propensities.max():.4g}")
        return True, "propensities match uniform logging"
    if not log.shared_candidates:
        return True, "no propensities recorded: uniform logging assumed, not verified"
    cats = np.sort(log.candidates)
    counts = np.bincount(np.searchsorted(cats, log.items), minlength=len(cats)).astype(float)
    if len(cats) < 2:
        return True, "single arm"
    chi2, p = stats.chisquare(counts)
    if p < alpha:
        return False, (f"logged item counts are far from uniform over the {len(cats)} items "
                       f"(chi-square p = {p:.2g}, counts {int(counts.min())}..{int(counts.max())})")
    return True, f"item counts consistent with uniform logging (chi-square p = {p:.2g})"


# --- replay -----------------------------------------------------------------------------------

def replay(policy: Policy, log: BanditLog, *, warn: bool = True, learn: bool = True) -> ReplayResult:
    """Li et al.'s replay estimate of ``policy``'s mean reward per decision.

    The policy learns (``update``) only from events where its choice matched the log, exactly
    as it would have online. Warns when the log does not look uniformly random.
    """
    uniform, message = logging_uniformity(log)
    if not uniform and warn:
        warnings.warn(f"replay is unbiased only for uniformly random logging, and this log is not: {message}. "
                      "Use ips/snips/doubly_robust with the logged propensities instead.",
                      NonUniformLoggingWarning, stacklevel=2)
    kept: list[float] = []
    with one_thread():
        for i in range(len(log)):
            ctx = log.context(i)
            choice = policy.select(ctx, log.candidates_of(i), 1)[0]
            if choice == log.items[i]:
                r = float(log.rewards[i])
                kept.append(r)
                if learn:
                    policy.update(ctx, int(choice), r)
    terms = np.asarray(kept)
    value = float(terms.mean()) if len(terms) else float("nan")
    return ReplayResult(Estimate.from_terms("replay", value, terms) if len(terms) else
                        Estimate("replay", value, float("nan"), 0), len(log), len(terms), uniform, message)


# --- inverse-propensity estimators --------------------------------------------------------

def _weights(propensities: np.ndarray, target: np.ndarray, clip: float | None) -> np.ndarray:
    propensities = np.asarray(propensities, dtype=np.float64)
    if np.any(propensities <= 0):
        raise ThawError("logged propensities must be positive for inverse-propensity estimates")
    w = np.asarray(target, dtype=np.float64) / propensities
    return w if clip is None else np.minimum(w, clip)


def ips(rewards: np.ndarray, propensities: np.ndarray, target: np.ndarray, *, clip: float | None = None) -> Estimate:
    """Inverse propensity scoring: mean of r * pi(a|x) / mu(a|x). Unbiased (unclipped)."""
    terms = _weights(propensities, target, clip) * np.asarray(rewards, dtype=np.float64)
    return Estimate.from_terms("ips", float(terms.mean()), terms)


def snips(rewards: np.ndarray, propensities: np.ndarray, target: np.ndarray, *, clip: float | None = None) -> Estimate:
    """Self-normalised IPS: sum w r / sum w. Slightly biased, much lower variance; SE by the delta method."""
    w = _weights(propensities, target, clip)
    r = np.asarray(rewards, dtype=np.float64)
    if w.sum() <= 0:
        return Estimate("snips", float("nan"), float("nan"), len(r))
    value = float((w * r).sum() / w.sum())
    return Estimate.from_terms("snips", value, w * (r - value) / w.mean() + value)


def doubly_robust(rewards: np.ndarray, propensities: np.ndarray, target: np.ndarray, reward_hat_logged: np.ndarray,
                  direct: np.ndarray, *, clip: float | None = None) -> Estimate:
    """Doubly robust (Dudik, Langford & Li 2011): direct method plus an IPS correction of its error.

    ``direct[i]`` is sum_a pi(a|x_i) rhat(x_i, a); ``reward_hat_logged[i]`` is rhat(x_i, a_i).
    Unbiased when either the propensities or the reward model are right.
    """
    w = _weights(propensities, target, clip)
    terms = np.asarray(direct) + w * (np.asarray(rewards) - np.asarray(reward_hat_logged))
    return Estimate.from_terms("dr", float(terms.mean()), terms)


class ItemMeanReward:
    """A simple reward model for DR: each item's mean logged reward, shrunk to the global mean."""

    def __init__(self, strength: float = 1.0) -> None:
        self.strength = float(strength)
        self.means = np.zeros(0)
        self.global_mean = 0.0

    def fit(self, log: BanditLog) -> ItemMeanReward:
        self.global_mean = float(log.rewards.mean()) if len(log) else 0.0
        size = int(log.items.max()) + 1 if len(log) else 0
        sums = np.bincount(log.items, weights=log.rewards, minlength=size)
        counts = np.bincount(log.items, minlength=size)
        self.means = (sums + self.strength * self.global_mean) / (counts + self.strength)
        return self

    def __call__(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        out = np.full(len(items), self.global_mean)
        ok = items < len(self.means)
        out[ok] = self.means[items[ok]]
        return out


def off_policy_estimates(policy: Policy, log: BanditLog, *, reward_model: RewardModel | None = None,
                         clip: float | None = None) -> dict[str, Estimate]:
    """IPS, SNIPS, and (with a reward model) DM and DR estimates of a *fixed* ``policy``.

    The policy is not updated: these estimators value one fixed decision rule. Its first-slot
    probabilities come from ``policy.action_probabilities`` (Monte Carlo for Thompson policies).
    """
    if log.propensities is None:
        raise ThawError("inverse-propensity estimates need logged propensities (a 'propensity' column)")
    n = len(log)
    target = np.empty(n)
    rhat = np.empty(n)
    direct = np.empty(n)
    with one_thread():
        _target_terms(policy, log, reward_model, target, rhat, direct)
    out = {"ips": ips(log.rewards, log.propensities, target, clip=clip),
           "snips": snips(log.rewards, log.propensities, target, clip=clip)}
    if reward_model is not None:
        out["dm"] = Estimate.from_terms("dm", float(direct.mean()), direct)
        out["dr"] = doubly_robust(log.rewards, log.propensities, target, rhat, direct, clip=clip)
    return out


def _target_terms(policy: Policy, log: BanditLog, reward_model: RewardModel | None, target: np.ndarray,
                  rhat: np.ndarray, direct: np.ndarray) -> None:
    """Fill pi(a_i|x_i), rhat(x_i, a_i) and sum_a pi(a|x_i) rhat(x_i, a) for every event."""
    for i in range(len(log)):
        ctx = log.context(i)
        cands = as_candidates(log.candidates_of(i))
        probs = policy.action_probabilities(ctx, cands)
        where = np.flatnonzero(cands == log.items[i])
        if len(where) == 0:
            raise ThawError(f"event {i}: logged item {log.items[i]} is not among its candidates")
        target[i] = probs[where[0]]
        if reward_model is not None:
            pred = np.asarray(reward_model(ctx, cands), dtype=np.float64)
            rhat[i] = pred[where[0]]
            direct[i] = float(probs @ pred)


# --- reading logs -------------------------------------------------------------------------

def read_log_csv(path: str | Path, dataset: Dataset | None = None) -> tuple[BanditLog, np.ndarray]:
    """Read a logged-bandit CSV; returns the log (internal ids) and the raw item ids by internal id.

    Columns: ``item`` and ``reward`` (required); ``user``, ``propensity``, ``candidates`` (item
    ids separated by spaces or '|', must include the logged item) and context features ``x_*``
    (numbers; they become ``ctx.profile['x']``) are optional. With ``dataset``, raw user and
    item ids are looked up in its id space and users get its profile features. Problems are
    reported as DataError naming the file, line and column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", file=str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot parse CSV: {exc}", file=str(path)) from exc
    frame.columns = [c.strip() for c in frame.columns]
    for col in ("item", "reward"):
        if col not in frame.columns:
            raise DataError(f"missing required column '{col}' (columns: {', '.join(frame.columns)})",
                            file=str(path), column=col)
    if len(frame) == 0:
        raise DataError("the log has no events", file=str(path))

    def numbers(col: str) -> np.ndarray:
        values = pd.to_numeric(frame[col].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"not a finite number: {frame[col].iloc[i]!r}", file=str(path), line=i + 2, column=col)
        return values

    rewards = numbers("reward")
    raw_items = frame["item"].str.strip()
    cand_lists: list[list[str]] | None = None
    if "candidates" in frame.columns:
        cand_lists = [[t for t in cell.replace("|", " ").split() if t] for cell in frame["candidates"]]
        for i, (cands, it) in enumerate(zip(cand_lists, raw_items, strict=False)):
            if it not in cands:
                raise DataError(f"logged item {it!r} is not among the event's candidates",
                                file=str(path), line=i + 2, column="candidates")

    if dataset is not None:
        item_index = pd.Index(dataset.item_ids.astype(str))
        item_raw = np.asarray(dataset.item_ids, dtype=object)
    else:
        pool = set(raw_items)
        if cand_lists is not None:
            pool.update(t for c in cand_lists for t in c)
        item_raw = np.asarray(sorted(pool, key=_natural), dtype=object)
        item_index = pd.Index(item_raw.astype(str))

    def lookup(values: Sequence[str], column: str, line: int | None = None) -> np.ndarray:
        idx = item_index.get_indexer(list(values))
        if np.any(idx < 0):
            k = int(np.flatnonzero(idx < 0)[0])
            raise DataError(f"unknown item id {values[k]!r}", file=str(path),
                            line=line if line is not None else k + 2, column=column)
        return idx.astype(np.int64)

    items = lookup(list(raw_items), "item")
    candidates: np.ndarray | list[np.ndarray] | None = None
    if cand_lists is not None:
        candidates = [lookup(c, "candidates", line=i + 2) for i, c in enumerate(cand_lists)]

    props = None
    if "propensity" in frame.columns:
        props = numbers("propensity")
        bad = (props <= 0) | (props > 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"propensity must be in (0, 1], got {props[i]}", file=str(path), line=i + 2,
                            column="propensity")

    users = None
    profiles: dict[int, dict] = {}
    if "user" in frame.columns:
        raw_users = frame["user"].str.strip()
        if dataset is not None:
            uidx = pd.Index(dataset.user_ids.astype(str)).get_indexer(list(raw_users))
            users = uidx.astype(np.int64)  # unknown users (-1) arrive as cold users without a profile
            profiles = {int(u): dataset.profile(int(u)) for u in np.unique(users[users >= 0])}
        else:
            users = pd.Index(pd.unique(raw_users)).get_indexer(list(raw_users)).astype(np.int64)

    x_cols = [c for c in frame.columns if c.startswith("x_")]
    contexts = None
    if x_cols:
        X = np.stack([numbers(c) for c in x_cols], axis=1)
        contexts = [Context(user=None if users is None or users[i] < 0 else int(users[i]),
                            profile={**(profiles.get(int(users[i]), {}) if users is not None else {}), "x": X[i]})
                    for i in range(len(frame))]
    log = BanditLog(items, rewards, users, props, candidates, contexts, profiles, str(path))
    return log, item_raw


def _natural(raw: str) -> tuple[int, object]:
    try:
        return (0, int(raw))
    except ValueError:
        return (1, raw)
