"""Contextual linear bandits: LinUCB (Li et al., WWW 2010) and linear Thompson sampling
(Agrawal & Goyal, ICML 2013), on the features a ``FeatureMap`` gives each (user, item) pair.

Two layouts. *Disjoint* (the default, LinUCB's "disjoint" model): every arm (item) has its own
ridge regression theta_a on the request's features, typically the user's profile. *Shared*:
one regression over all arms on joined user-item features (``JoinedFeatures``), so a new item
is scored from its features at once. Each regression keeps A = lambda*I + sum x x^T, b = sum r x
and A^-1 (Sherman-Morrison rank-one updates, recomputed exactly from A every ``refresh_every``
updates to stop round-off from piling up). Because lambda > 0, A is positive definite from the
first request: with no data theta = 0 and the uncertainty is ||x||^2 / lambda, never NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np

from thaw.bandits.features import FeatureMap, feature_map_from_state
from thaw.bandits.policies import (
    Policy,
    Sampler,
    _index_probabilities,
    _index_slate,
    _normal_sampler,
    as_candidates,
    sampled_slate,
)
from thaw.errors import ThawError
from thaw.models.base import Context


class _LinearPolicy(Policy):
    def __init__(self, features: FeatureMap, lam: float = 1.0, shared: bool = False, seed: int = 0,
                 warm_max: float = 5.0, refresh_every: int = 256) -> None:
        super().__init__(seed)
        if lam <= 0:
            raise ThawError(f"the ridge regulariser lam must be positive, got {lam}")
        self.features, self.lam, self.shared = features, float(lam), bool(shared)
        self.warm_max, self.refresh_every = float(warm_max), int(refresh_every)
        d = features.dim
        self.d = d
        if self.shared:
            self.A = self.lam * np.eye(d)
            self.A_inv = np.eye(d) / self.lam
            self.b = np.zeros(d)
            self.theta = np.zeros(d)
            self.count = 0.0
        else:
            self.slot_of = np.full(0, -1, dtype=np.int64)
            self.n_slots = 0
            self.A = np.zeros((0, d, d))
            self.A_inv = np.zeros((0, d, d))
            self.b = np.zeros((0, d))
            self.theta = np.zeros((0, d))
            self.counts = np.zeros(0)

    # --- storage of per-arm regressions (disjoint) --------------------------------------------

    def _slots(self, items: np.ndarray) -> np.ndarray:
        top = int(items.max())
        if top >= len(self.slot_of):
            grown = np.full(max(top + 1, 2 * len(self.slot_of), 64), -1, dtype=np.int64)
            grown[: len(self.slot_of)] = self.slot_of
            self.slot_of = grown
        return self.slot_of[items]

    def _new_slot(self, item: int) -> int:
        if self.n_slots == len(self.counts):
            cap = max(2 * self.n_slots, 16)
            eye = np.broadcast_to(np.eye(self.d), (cap - self.n_slots, self.d, self.d))
            self.A = np.concatenate([self.A[: self.n_slots], self.lam * eye])
            self.A_inv = np.concatenate([self.A_inv[: self.n_slots], eye / self.lam])
            self.b = np.concatenate([self.b[: self.n_slots], np.zeros((cap - self.n_slots, self.d))])
            self.theta = np.concatenate([self.theta[: self.n_slots], np.zeros((cap - self.n_slots, self.d))])
            self.counts = np.concatenate([self.counts[: self.n_slots], np.zeros(cap - self.n_slots)])
        slot = self.n_slots
        self.n_slots += 1
        self._slots(np.asarray([item]))
        self.slot_of[item] = slot
        return slot

    def known_arms(self) -> np.ndarray:
        if self.shared:
            return np.empty(0, dtype=np.int64)
        items = np.flatnonzero(self.slot_of >= 0)
        return items[self.counts[self.slot_of[items]] > 0]

    def theta_of(self, item: int | None = None) -> np.ndarray:
        """The ridge estimate: the shared theta, or arm ``item``'s (zeros for an unseen arm)."""
        if self.shared or item is None:
            if not self.shared:
                raise ThawError("a disjoint model has one theta per arm: pass the item")
            return self.theta.copy()
        slot = self._slots(np.asarray([int(item)]))[0]
        return np.zeros(self.d) if slot < 0 else self.theta[slot].copy()

    # --- the model ------------------------------------------------------------------------

    def _rows(self, ctx: Context, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Feature rows (m, d), and the single context vector when rows do not depend on the item."""
        if self.features.per_item:
            X = np.asarray(self.features(ctx, cands), dtype=np.float64)
            x = None
        else:
            x = np.asarray(self.features.context_vector(ctx), dtype=np.float64)
            X = np.broadcast_to(x, (len(cands), self.d))
            if not np.all(np.isfinite(x)):
                raise ThawError("context features contain NaN or infinity")
            return X, x
        if not np.all(np.isfinite(X)):
            raise ThawError("context features contain NaN or infinity")
        return X, x

    def mean_and_var(self, ctx: Context, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted reward x.theta and its uncertainty x^T A^-1 x for every candidate."""
        X, x = self._rows(ctx, cands)
        if self.shared:
            mean = X @ self.theta
            var = np.einsum("mi,mi->m", X @ self.A_inv, X)
            return mean, np.maximum(var, 0.0)
        slots = self._slots(cands)
        known = slots >= 0
        if x is not None:
            mean = np.zeros(len(cands))
            var = np.full(len(cands), float(x @ x) / self.lam)
            if known.any():
                ks = slots[known]
                if 2 * len(ks) >= self.n_slots:  # score every stored arm at once, then pick
                    n = self.n_slots
                    all_var = self.A_inv[:n].reshape(n, -1) @ np.outer(x, x).ravel()
                    mean[known] = (self.theta[:n] @ x)[ks]
                    var[known] = all_var[ks]
                else:
                    mean[known] = self.theta[ks] @ x
                    var[known] = np.einsum("kij,i,j->k", self.A_inv[ks], x, x)
        else:
            mean = np.zeros(len(cands))
            var = np.einsum("mi,mi->m", X, X) / self.lam
            if known.any():
                ks, Xk = slots[known], X[known]
                mean[known] = np.einsum("ki,ki->k", Xk, self.theta[ks])
                var[known] = np.einsum("ki,kij,kj->k", Xk, self.A_inv[ks], Xk)
        return mean, np.maximum(var, 0.0)

    def _update(self, ctx: Context, item: int, reward: float) -> None:
        X, _ = self._rows(ctx, np.asarray([item]))
        x = np.array(X[0])
        if self.shared:
            self.A += np.outer(x, x)
            self.b += reward * x
            self.count += 1.0
            self.A_inv = self._rank_one(self.A_inv, x, self.A, self.count)
            self.theta = self.A_inv @ self.b
            return
        slot = self._slots(np.asarray([item]))[0]
        if slot < 0:
            slot = self._new_slot(item)
        self.A[slot] += np.outer(x, x)
        self.b[slot] += reward * x
        self.counts[slot] += 1.0
        self.A_inv[slot] = self._rank_one(self.A_inv[slot], x, self.A[slot], self.counts[slot])
        self.theta[slot] = self.A_inv[slot] @ self.b[slot]

    def _rank_one(self, A_inv: np.ndarray, x: np.ndarray, A: np.ndarray, count: float) -> np.ndarray:
        if self.refresh_every > 0 and int(count) % self.refresh_every == 0:
            return _spd_inverse(A)
        u = A_inv @ x
        new = A_inv - np.outer(u, u) / (1.0 + x @ u)
        return 0.5 * (new + new.T)

    def add_arm(self, item: int, sources: np.ndarray, weights: np.ndarray) -> bool:
        """Disjoint only: the new arm starts at its neighbours' weighted theta, with at most
        ``warm_max`` observations' worth of their confidence."""
        if self.shared:
            return False
        slot = self._slots(np.asarray([int(item)]))[0]
        if slot >= 0 and self.counts[slot] > 0:
            return False
        src = self._slots(np.asarray(sources, dtype=np.int64))
        ok = src >= 0
        ok[ok] = self.counts[src[ok]] > 0
        if not ok.any():
            return False
        w = weights[ok] / weights[ok].sum()
        ss = src[ok]
        theta = w @ self.theta[ss]
        evidence = np.einsum("k,kij->ij", w, self.A[ss] - self.lam * np.eye(self.d))
        n = float(w @ self.counts[ss])
        scale = min(1.0, self.warm_max / n) if n > 0 else 0.0
        if slot < 0:
            slot = self._new_slot(int(item))
        self.A[slot] = self.lam * np.eye(self.d) + scale * evidence
        self.A_inv[slot] = _spd_inverse(self.A[slot])
        self.b[slot] = self.A[slot] @ theta
        self.theta[slot] = self.A_inv[slot] @ self.b[slot]
        self.counts[slot] = scale * n
        return True

    # --- state ------------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        _, fmeta = self.features.state()
        return {**super().config(), "lam": self.lam, "shared": self.shared, "warm_max": self.warm_max,
                "refresh_every": self.refresh_every, "features": fmeta}

    def arrays(self) -> dict[str, np.ndarray]:
        farrays, _ = self.features.state()
        out = {f"features.{k}": v for k, v in farrays.items()}
        if self.shared:
            out.update(A=self.A, A_inv=self.A_inv, b=self.b, theta=self.theta, count=np.asarray([self.count]))
        else:
            n = self.n_slots
            out.update(slot_of=self.slot_of, A=self.A[:n], A_inv=self.A_inv[:n], b=self.b[:n],
                       theta=self.theta[:n], counts=self.counts[:n])
        return out

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        for key in ("A", "A_inv", "b", "theta"):
            setattr(self, key, arrays[key].astype(np.float64).copy())
        if self.shared:
            self.count = float(arrays["count"][0])
        else:
            self.slot_of = arrays["slot_of"].astype(np.int64).copy()
            self.counts = arrays["counts"].astype(np.float64).copy()
            self.n_slots = len(self.counts)

    @classmethod
    def build(cls, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Self:
        config = dict(config)
        farrays = {k[len("features."):]: v for k, v in arrays.items() if k.startswith("features.")}
        config["features"] = feature_map_from_state(farrays, config["features"])
        return cls(**config)


class LinUCB(_LinearPolicy):
    """Per slot, the remaining candidate with the highest x.theta + alpha * sqrt(x^T A^-1 x)."""

    name = "linucb"

    def __init__(self, features: FeatureMap, alpha: float = 1.0, lam: float = 1.0, shared: bool = False,
                 seed: int = 0, warm_max: float = 5.0, refresh_every: int = 256) -> None:
        super().__init__(features, lam, shared, seed, warm_max, refresh_every)
        if alpha < 0:
            raise ThawError(f"alpha must be non-negative, got {alpha}")
        self.alpha = float(alpha)

    def scores(self, ctx: Context, cands: np.ndarray) -> np.ndarray:
        mean, var = self.mean_and_var(ctx, cands)
        return mean + self.alpha * np.sqrt(var)

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        return _index_slate(self.scores(ctx, cands), n, self.rng)

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray) -> np.ndarray:
        return _index_probabilities(self.scores(ctx, as_candidates(candidates)))

    def config(self) -> dict[str, Any]:
        return {**super().config(), "alpha": self.alpha}


class LinearTS(_LinearPolicy):
    """Linear Thompson sampling: per slot, the best remaining candidate under theta ~ N(theta_hat, v^2 A^-1).

    ``v`` scales the posterior spread; the default 0.5 is the largest standard deviation a
    reward in [0, 1] can have. Propensities are Monte-Carlo estimates as in ``ThompsonBeta``.
    """

    name = "lints"

    def __init__(self, features: FeatureMap, v: float = 0.5, lam: float = 1.0, shared: bool = False,
                 seed: int = 0, warm_max: float = 5.0, refresh_every: int = 256, propensity_draws: int = 32) -> None:
        super().__init__(features, lam, shared, seed, warm_max, refresh_every)
        if v <= 0:
            raise ThawError(f"v must be positive, got {v}")
        self.v, self.propensity_draws = float(v), int(propensity_draws)

    def _sampler(self, ctx: Context, cands: np.ndarray) -> tuple[Sampler, np.ndarray, np.ndarray]:
        mean, var = self.mean_and_var(ctx, cands)
        sd = self.v * np.sqrt(var)
        if not self.shared:  # disjoint arms are independent: each score is its own normal
            return _normal_sampler(self.rng, mean, sd)
        X, _ = self._rows(ctx, cands)
        chol = np.linalg.cholesky(self.A)

        def sample(size: int | None, idx: np.ndarray | None) -> np.ndarray:
            z = self.rng.standard_normal((self.d, 1 if size is None else size))
            thetas = self.theta[:, None] + self.v * _solve_upper(chol.T, z)  # ~ N(theta, v^2 A^-1)
            if size is None:
                return (X @ thetas)[:, 0]
            return (X[idx] @ thetas).T
        return sample, mean - 6.0 * sd, mean + 6.0 * sd

    def _decide(self, ctx: Context, cands: np.ndarray, n: int) -> tuple[list[int], list[float]]:
        sample, low, high = self._sampler(ctx, cands)
        return sampled_slate(sample, len(cands), n, self.propensity_draws, low, high)

    def action_probabilities(self, ctx: Context, candidates: Sequence[int] | np.ndarray,
                             draws: int = 2000) -> np.ndarray:
        cands = as_candidates(candidates)
        sample = self._sampler(ctx, cands)[0]
        winners = np.argmax(sample(draws, np.arange(len(cands))), axis=1)
        return np.bincount(winners, minlength=len(cands)) / draws

    def config(self) -> dict[str, Any]:
        return {**super().config(), "v": self.v, "propensity_draws": self.propensity_draws}


def _spd_inverse(A: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive definite matrix through its Cholesky factor."""
    chol = np.linalg.cholesky(A)
    inv_chol = _solve_lower(chol, np.eye(len(A)))
    inv = inv_chol.T @ inv_chol
    return 0.5 * (inv + inv.T)


def _solve_lower(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular
    return solve_triangular(L, B, lower=True, check_finite=False)


def _solve_upper(U: np.ndarray, B: np.ndarray) -> np.ndarray:
    from scipy.linalg import solve_triangular
    return solve_triangular(U, B, lower=False, check_finite=False)
