"""Matrix factorisation fitted on warm users; cold users are folded in, never retrained.

A cold user's factor is solved in closed form from their K support interactions against the
frozen item factors: the same regularised least squares that fits a warm user, so folding in
costs one small linear solve per request.

``mf`` fits two factorisations with alternating least squares: an implicit one (what a user
interacts with at all; used to rank) and an explicit biased one (how they rate; used to predict
ratings). ``bpr`` learns item factors with the BPR pairwise loss and folds users in with the
implicit solve.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import scipy.sparse as sp
import torch

from thaw.data.schema import Dataset
from thaw.models.base import Context, Recommender, Validator, register


def implicit_fold_in(item_factors: np.ndarray, gram: np.ndarray, items: np.ndarray,
                     alpha: float, reg: float) -> np.ndarray:
    """Implicit-feedback user factor (Hu, Koren & Volinsky 2008) from the items they touched.

    Every item is a weak negative (confidence 1, preference 0); each touched item a positive
    with confidence 1 + alpha per touch. ``gram`` is item_factors.T @ item_factors, precomputed.
    """
    d = item_factors.shape[1]
    if len(items) == 0:
        return np.zeros(d)
    # An item touched n times has confidence 1 + n * alpha and preference 1.
    touched = item_factors[items]
    a = gram + alpha * touched.T @ touched + reg * np.eye(d)
    b = alpha * touched.sum(axis=0) + item_factors[np.unique(items)].sum(axis=0)
    return np.linalg.solve(a, b)


def explicit_fold_in(item_factors: np.ndarray, residuals: np.ndarray, items: np.ndarray,
                     reg: float) -> tuple[np.ndarray, float]:
    """Biased-MF user factor and bias from (item, rating - mean - item bias) pairs (ridge)."""
    d = item_factors.shape[1]
    if len(items) == 0:
        return np.zeros(d), 0.0
    design = np.hstack([item_factors[items], np.ones((len(items), 1))])
    a = design.T @ design + reg * len(items) * np.eye(d + 1)
    w = np.linalg.solve(a, design.T @ residuals)
    return w[:d], float(w[d])


def _implicit_als(matrix: sp.csr_matrix, dim: int, reg: float, alpha: float, iterations: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n_users, n_items = matrix.shape
    users = np.zeros((n_users, dim))
    items = rng.normal(0.0, 0.1, (n_items, dim))
    by_item = matrix.T.tocsr()
    for _ in range(iterations):
        for fixed, solved, rows in ((items, users, matrix), (users, items, by_item)):
            gram = fixed.T @ fixed
            for r in range(rows.shape[0]):
                cols = rows.indices[rows.indptr[r]:rows.indptr[r + 1]]
                solved[r] = implicit_fold_in(fixed, gram, cols, alpha, reg)
    return users, items


def _explicit_als(user: np.ndarray, item: np.ndarray, rating: np.ndarray, n_users: int,
                  n_items: int, dim: int, reg: float, iterations: int,
                  rng: np.random.Generator) -> dict[str, Any]:
    mean = float(rating.mean())
    p, q = np.zeros((n_users, dim)), rng.normal(0.0, 0.1, (n_items, dim))
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    order_u = np.argsort(user, kind="stable")
    order_i = np.argsort(item, kind="stable")
    starts_u = np.searchsorted(user[order_u], np.arange(n_users + 1))
    starts_i = np.searchsorted(item[order_i], np.arange(n_items + 1))
    for _ in range(iterations):
        for u in range(n_users):
            rows = order_u[starts_u[u]:starts_u[u + 1]]
            if len(rows):
                p[u], bu[u] = explicit_fold_in(q, rating[rows] - mean - bi[item[rows]], item[rows], reg)
        for i in range(n_items):
            rows = order_i[starts_i[i]:starts_i[i + 1]]
            if len(rows):
                q[i], bi[i] = explicit_fold_in(p, rating[rows] - mean - bu[user[rows]], user[rows], reg)
    return {"mean": mean, "user_factors": p, "item_factors": q, "user_bias": bu, "item_bias": bi}


@register("mf")
class MatrixFactorization(Recommender):
    """ALS matrix factorisation with closed-form fold-in of cold users.

    With a validator, the regularisation is chosen from ``grid`` on validation users.
    """

    predicts_ratings = True

    def __init__(self, dim: int = 32, reg: float = 0.1, alpha: float = 10.0, iterations: int = 10,
                 grid: tuple[float, ...] = (0.03, 0.1, 0.3), seed: int = 0) -> None:
        self.dim, self.reg, self.alpha, self.iterations = dim, reg, alpha, iterations
        self.grid, self.seed = grid, seed

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        if validate is None or len(self.grid) < 2:
            return self._fit(data, self.reg)
        best = max(self.grid, key=lambda reg: validate(self._fit(data, reg)))
        return self._fit(data, best)

    def _fit(self, data: Dataset, reg: float) -> Self:
        self.reg = reg
        rng = np.random.default_rng(self.seed)
        inter = data.interactions
        matrix = sp.csr_matrix((np.ones(len(inter)), (inter.user, inter.item)),
                               shape=(data.n_users, data.n_items))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        # The implicit regulariser works on summed confidences, so it scales with the data.
        self.implicit_reg = reg * 100.0
        self.user_factors, self.item_factors = _implicit_als(
            matrix, self.dim, self.implicit_reg, self.alpha, self.iterations, rng)
        self.gram = self.item_factors.T @ self.item_factors
        self.explicit = _explicit_als(inter.user, inter.item, inter.rating.astype(np.float64),
                                      data.n_users, data.n_items, self.dim, reg, self.iterations, rng)
        self.known_users = np.zeros(data.n_users, dtype=bool)
        self.known_users[inter.user] = True
        return self

    def _user_vector(self, ctx: Context) -> np.ndarray:
        if ctx.user is not None and self.known_users[ctx.user]:
            return self.user_factors[ctx.user]
        return implicit_fold_in(self.item_factors, self.gram, ctx.history.item, self.alpha,
                                self.implicit_reg)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.item_factors[items] @ self._user_vector(ctx)

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        e = self.explicit
        if ctx.user is not None and self.known_users[ctx.user]:
            factor, bias = e["user_factors"][ctx.user], e["user_bias"][ctx.user]
        else:
            hist = ctx.history
            residuals = hist.rating - e["mean"] - e["item_bias"][hist.item]
            factor, bias = explicit_fold_in(e["item_factors"], residuals, hist.item, self.reg)
        return e["mean"] + bias + e["item_bias"][items] + e["item_factors"][items] @ factor


@register("bpr")
class BPR(Recommender):
    """BPR-MF (Rendle et al. 2009) with item biases; cold users folded in by the implicit solve.

    Ranking only: BPR learns an order, not a rating. Epochs stop early on validation users, and
    the weight of the folded-in factor against the item bias is chosen there too.
    """

    def __init__(self, dim: int = 32, lr: float = 0.01, reg: float = 1e-4, epochs: int = 40,
                 batch_size: int = 2048, alpha: float = 10.0, fold_reg: float = 10.0,
                 fold_scales: tuple[float, ...] = (0.3, 1.0, 3.0), check_every: int = 5,
                 patience: int = 2, seed: int = 0) -> None:
        self.dim, self.lr, self.reg, self.epochs = dim, lr, reg, epochs
        self.batch_size, self.alpha, self.fold_reg = batch_size, alpha, fold_reg
        self.fold_scales, self.check_every, self.patience, self.seed = (
            fold_scales, check_every, patience, seed)
        self.fold_scale = 1.0

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        inter = data.interactions
        users = torch.as_tensor(inter.user)
        items = torch.as_tensor(inter.item)
        user_emb = torch.nn.Parameter(torch.randn(data.n_users, self.dim) * 0.1)
        item_emb = torch.nn.Parameter(torch.randn(data.n_items, self.dim) * 0.1)
        item_bias = torch.nn.Parameter(torch.zeros(data.n_items))
        opt = torch.optim.Adam([user_emb, item_emb, item_bias], lr=self.lr)
        best, best_state, stale = -np.inf, None, 0
        for epoch in range(1, self.epochs + 1):
            order = torch.as_tensor(rng.permutation(len(inter)))
            negatives = torch.as_tensor(rng.integers(0, data.n_items, len(inter)))
            for start in range(0, len(inter), self.batch_size):
                idx = order[start:start + self.batch_size]
                u, i, j = users[idx], items[idx], negatives[idx]
                pu, qi, qj = user_emb[u], item_emb[i], item_emb[j]
                diff = (pu * (qi - qj)).sum(1) + item_bias[i] - item_bias[j]
                loss = -torch.nn.functional.logsigmoid(diff).mean() + self.reg * (
                    pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()) / len(idx)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if validate is not None and (epoch % self.check_every == 0 or epoch == self.epochs):
                self._freeze(user_emb, item_emb, item_bias, data)
                value = self._tune_fold_scale(validate)
                if value > best:
                    best, stale = value, 0
                    best_state = (self.user_factors, self.item_factors, self.item_bias,
                                  self.fold_scale)
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
        if best_state is None:
            self._freeze(user_emb, item_emb, item_bias, data)
        else:
            self.user_factors, self.item_factors, self.item_bias, self.fold_scale = best_state
            self.gram = self.item_factors.T @ self.item_factors
        self.epochs_run = epoch
        return self

    def _freeze(self, user_emb: torch.Tensor, item_emb: torch.Tensor, item_bias: torch.Tensor,
                data: Dataset) -> None:
        self.user_factors = user_emb.detach().numpy().astype(np.float64)
        self.item_factors = item_emb.detach().numpy().astype(np.float64)
        self.item_bias = item_bias.detach().numpy().astype(np.float64)
        self.gram = self.item_factors.T @ self.item_factors
        self.known_users = np.zeros(data.n_users, dtype=bool)
        self.known_users[data.interactions.user] = True

    def _tune_fold_scale(self, validate: Validator) -> float:
        scores = {}
        for scale in self.fold_scales:
            self.fold_scale = scale
            scores[scale] = validate(self)
        self.fold_scale = max(scores, key=scores.get)
        return scores[self.fold_scale]

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        if ctx.user is not None and self.known_users[ctx.user]:
            vector = self.user_factors[ctx.user]
        else:
            vector = self.fold_scale * implicit_fold_in(self.item_factors, self.gram,
                                                        ctx.history.item, self.alpha, self.fold_reg)
        return self.item_bias[items] + self.item_factors[items] @ vector
