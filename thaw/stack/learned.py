"""The learned stacker: how much to trust each member, per request and per item.

The band table (router.py) makes one choice per support-size band from a few hundred
validation episodes; the members' differences are per user and per item, so it captures little
of what a per-user oracle over them would. This learns from out-of-fold episodes instead:
every training user scored, as a cold user at every support size, by member fits that never
saw them (``thaw.data.splits.user_folds``), thousands of requests in all. Each (request,
candidate) row holds every member's score (z-normalised per request, or the predicted rating),
its rank and confidence, the support size, the profile, the item's training count and the
support's popularity. Two learners read them:

- ``fwls``: feature-weighted linear stacking (Sill et al., 2009): each member's weight is a
  linear function of a few request features (support size, profile), fitted by a listwise
  softmax loss (next-item) or least squares (ratings). Small, and its weights explain it.
- ``lgbm``: LightGBM's lambdarank ranker (next-item) or L1 regressor (ratings: MAE is the
  headline) over every feature.

Both are plain data once fitted (arrays, LightGBM's own text model format) and are saved with
the stack; which one answers is chosen on validation users.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata

from thaw.models.base import normalise

LEARNERS = ("fwls", "lgbm")
PENALTIES = (1e-3, 1e-2, 1e-1)
"""The FWLS ridge weights tried on validation users."""
MAX_CATEGORIES = 30
"""Profile values kept per categorical field (the most frequent); the rest read as unknown.
A field with more values than this (a zip code) is left out of FWLS's request features."""
TIE_BREAK = 1e-6
"""LightGBM's trees score many candidates alike; ties count against a model, so the members'
mean z-score, scaled to change no other order, breaks them."""


class Features:
    """The stacker's view of one request: a row of numbers per candidate item, and the few
    request-level numbers FWLS weights its members by. Learns its vocabularies (profile
    values) and its scaling from the training episodes; plain data after that."""

    def __init__(self, members: Sequence[str], task: str, item_counts: np.ndarray,
                 profiles: Sequence[Mapping[str, Any]]) -> None:
        self.members, self.task = list(members), task
        self.item_log_count = np.log1p(np.asarray(item_counts, dtype=np.float64))
        fields: dict[str, list[Any]] = {}
        for profile in profiles:
            for key, value in profile.items():
                fields.setdefault(str(key), []).append(value)
        self.numeric: list[str] = []
        self.categories: dict[str, list[str]] = {}
        self.crowded: list[str] = []
        for key, values in sorted(fields.items()):
            if all(_is_number(v) for v in values):
                self.numeric.append(key)
            else:
                seen, counts = np.unique([str(v) for v in values], return_counts=True)
                if len(seen) > MAX_CATEGORIES:
                    self.crowded.append(key)
                order = np.lexsort((seen, -counts))[:MAX_CATEGORIES]
                self.categories[key] = [str(seen[i]) for i in order]
        numbers = np.array([[_number(p.get(k)) for k in self.numeric] for p in profiles], dtype=np.float64)
        numbers = numbers.reshape(len(profiles), len(self.numeric))
        with np.errstate(all="ignore"):
            self.numeric_mean = np.nan_to_num(np.nanmean(numbers, axis=0)) if len(profiles) else np.zeros(0)
            self.numeric_std = np.nan_to_num(np.nanstd(numbers, axis=0), nan=1.0) if len(profiles) else np.ones(0)
        self.numeric_std = np.where(self.numeric_std > 0, self.numeric_std, 1.0)

    # --- names ----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Column names of ``rows``, in order."""
        per_member = [f"{m}:{what}" for what in ("score", "rank", "confidence") for m in self.members]
        request = ["k", "log_k", *(f"profile:{k}" for k in self.numeric),
                   *(f"profile:{k}" for k in self.categories), "support_popularity"]
        if self.task == "rating":
            request.append("support_mean_rating")
        return [*per_member, *request, "item_log_count"]

    def categorical(self) -> list[int]:
        """Columns LightGBM reads as categories (the coded profile fields)."""
        start = 3 * len(self.members) + 2 + len(self.numeric)
        return list(range(start, start + len(self.categories)))

    def request_names(self) -> list[str]:
        """Names of the request features FWLS weights its members by."""
        cats = [f"{k}={v}" for k, vocab in self._weighted().items() for v in vocab]
        return ["intercept", "log_k", "k=0", *self.numeric, *cats]

    def without(self, dropped: Sequence[str]) -> Features:
        """The same features with the members ``dropped`` left out (their three columns)."""
        out = copy.copy(self)
        out.members = [m for m in self.members if m not in set(dropped)]
        return out

    # --- values ---------------------------------------------------------------------------

    def member_scores(self, outputs: Mapping[str, np.ndarray | None], n: int) -> np.ndarray:
        """(n items, members): z-scores (next-item) or predicted ratings; 0 where missing."""
        cols = []
        for m in self.members:
            out = outputs.get(m)
            if out is None:
                cols.append(np.zeros(n))
                continue
            out = np.asarray(out, dtype=np.float64)
            cols.append(np.nan_to_num(normalise(out) if self.task == "next-item" else out, nan=0.0,
                                      posinf=0.0, neginf=0.0))
        return np.stack(cols, axis=1) if cols else np.zeros((n, 0))

    def rows(self, context: Any, items: np.ndarray, outputs: Mapping[str, np.ndarray | None],
             confidences: Mapping[str, float], item_log_count: np.ndarray | None = None) -> np.ndarray:
        """The (n items, features) matrix of one request, columns as in ``names``.
        ``item_log_count`` replaces the items' training counts: an out-of-fold episode must
        read its fold's counts, which leave its own user's interactions out (the full counts
        would tell the learner that the target has been seen at least once)."""
        items = np.asarray(items, dtype=np.int64)
        n = len(items)
        scores = self.member_scores(outputs, n)
        # every member's column ranked in one call (a call per column cost 3.5 ms a request)
        ranks = (rankdata(-scores, method="average", axis=0) / max(n, 1) if n and scores.shape[1]
                 else np.zeros((n, len(self.members))))
        conf = np.array([_number(confidences.get(m)) for m in self.members], dtype=np.float64)
        conf = np.where(np.isfinite(conf), conf, np.nan)
        history = context.history
        k = len(history)
        profile = context.profile or {}
        support = self._item_log_count(history.item, item_log_count)
        request = [k, math.log1p(k), *(_number(profile.get(f)) for f in self.numeric),
                   *(self._code(f, profile.get(f)) for f in self.categories),
                   float(support.mean()) if k else np.nan]
        if self.task == "rating":
            request.append(float(np.mean(history.rating)) if k else np.nan)
        out = np.empty((n, 3 * len(self.members) + len(request) + 1))
        m = len(self.members)
        out[:, :m], out[:, m:2 * m], out[:, 2 * m:3 * m] = scores, ranks, conf
        out[:, 3 * m:-1] = np.asarray(request, dtype=np.float64)
        out[:, -1] = self._item_log_count(items, item_log_count)
        return out

    def request_row(self, context: Any) -> np.ndarray:
        """FWLS's request features: intercept, log(1 + K), K = 0, the numeric profile fields
        standardised, and one indicator per known categorical profile value."""
        k = len(context.history)
        profile = context.profile or {}
        numbers = (np.array([_number(profile.get(f)) for f in self.numeric]) - self.numeric_mean) / self.numeric_std
        cats = [float(str(profile.get(f)) == v) if profile.get(f) is not None else 0.0
                for f, vocab in self._weighted().items() for v in vocab]
        return np.concatenate([[1.0, math.log1p(k), float(k == 0)], np.nan_to_num(numbers), cats])

    def _weighted(self) -> dict[str, list[str]]:
        """The categorical fields FWLS weights members by: those whose every value is kept."""
        return {f: vocab for f, vocab in self.categories.items() if f not in self.crowded}

    def _code(self, field: str, value: Any) -> float:
        if value is None:
            return np.nan
        vocab = self.categories[field]
        text = str(value)
        return float(vocab.index(text)) if text in vocab else np.nan

    def _item_log_count(self, items: np.ndarray, table: np.ndarray | None = None) -> np.ndarray:
        table = self.item_log_count if table is None else table
        items = np.asarray(items, dtype=np.int64)
        out = np.zeros(len(items))
        known = (items >= 0) & (items < len(table))
        out[known] = table[items[known]]
        return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _number(value: Any) -> float:
    try:
        return float(value) if value is not None and _is_number(value) else np.nan
    except (TypeError, ValueError):
        return np.nan


# --- the training table -----------------------------------------------------------------------

class Table:
    """Every episode's rows stacked: features, member scores, request features, labels (1 for
    the next-item target, the true rating under the rating protocol) and episode bounds."""

    def __init__(self, features: Features, episodes: Sequence[Any],
                 outputs: Mapping[str, Sequence[np.ndarray | None]],
                 confidences: Mapping[str, np.ndarray], item_counts: Sequence[np.ndarray] | None = None) -> None:
        """``item_counts``: each episode's own training counts of the items (out-of-fold
        episodes: their fold's), instead of the features'."""
        x, labels, sizes, requests = [], [], [], []
        logs: dict[int, np.ndarray] = {}
        for i, ep in enumerate(episodes):
            out = {m: outputs[m][i] for m in features.members}
            conf = {m: float(confidences[m][i]) for m in features.members}
            log_count = None
            if item_counts is not None:
                log_count = logs.setdefault(id(item_counts[i]), np.log1p(np.asarray(item_counts[i], dtype=np.float64)))
            x.append(features.rows(ep.context, ep.candidates, out, conf, log_count))
            if features.task == "next-item":
                labels.append((np.arange(len(ep.candidates)) == 0).astype(np.float64))
            else:
                labels.append(np.asarray(ep.truth, dtype=np.float64))
            sizes.append(len(ep.candidates))
            requests.append(features.request_row(ep.context))
        width = len(features.names())
        self.x = np.concatenate(x) if x else np.zeros((0, width))
        self.scores = self.x[:, :len(features.members)]  # the rows' first columns
        self.labels = np.concatenate(labels) if labels else np.zeros(0)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.requests = np.stack(requests) if requests else np.zeros((0, len(features.request_names())))
        self.episode = np.repeat(np.arange(len(sizes)), self.sizes)
        self.truths = [ep.truth for ep in episodes]

    def narrowed(self, full: Features, kept: Features) -> Table:
        """This table with only the columns of ``kept`` (``full`` less some members), so a
        learner can be refitted without a member without making every row again."""
        names = full.names()
        out = copy.copy(self)
        out.x = self.x[:, [names.index(n) for n in kept.names()]]
        out.scores = out.x[:, :len(kept.members)]
        return out

    def split_outputs(self, flat: np.ndarray) -> list[np.ndarray]:
        """A flat per-row vector cut back into one array per episode."""
        return np.split(flat, np.cumsum(self.sizes)[:-1]) if len(self.sizes) else []


# --- feature-weighted linear stacking ---------------------------------------------------------

def fwls_fit(table: Table, task: str, penalty: float) -> dict[str, np.ndarray]:
    """Member weights W (request features x members) and, for ratings, an intercept per
    request feature b: the answer for an item is sum_m s_m * (f W)_m (+ f b)."""
    f, s = table.requests, table.scores
    q, m = f.shape[1], s.shape[1]
    if task == "rating":
        # Least squares in closed form: the design row of one query item is kron(f, [s, 1]).
        sx = np.concatenate([s, np.ones((len(s), 1))], axis=1)
        per_episode = np.zeros((len(table.sizes), (m + 1) ** 2))
        np.add.at(per_episode, table.episode, np.einsum("ra,rb->rab", sx, sx).reshape(len(sx), -1))
        ff = np.einsum("ei,ej->eij", f, f).reshape(len(f), -1)
        gram = (ff.T @ per_episode).reshape(q, q, m + 1, m + 1).transpose(0, 2, 1, 3).reshape(q * (m + 1), -1)
        targets = np.zeros((len(table.sizes), m + 1))
        np.add.at(targets, table.episode, sx * table.labels[:, None])
        moment = (f.T @ targets).reshape(-1)
        n = max(len(sx), 1)
        theta = np.linalg.solve(gram / n + penalty * np.eye(len(gram)), moment / n)
        theta = theta.reshape(q, m + 1)
        return {"weights": np.ascontiguousarray(theta[:, :m]), "intercept": np.ascontiguousarray(theta[:, m])}
    width = int(table.sizes.max()) if len(table.sizes) else 0
    padded, mask = _pad(table, s, width)
    log_count = _pad(table, table.x[:, -1:], width)[0][:, :, 0]
    target = np.zeros(mask.shape)
    starts = np.cumsum(np.concatenate([[0], table.sizes[:-1]]))
    target[np.arange(len(starts)), 0] = table.labels[starts] if len(starts) else 0.0

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, beta = theta[:-1].reshape(q, m), theta[-1]
        a = f @ w
        logits = np.einsum("ecm,em->ec", padded, a) + beta * log_count
        logits = np.where(mask, logits, -np.inf)
        top = logits.max(axis=1, keepdims=True)
        p = np.exp(logits - top)
        total = p.sum(axis=1, keepdims=True)
        p /= total
        picked = np.sum(target * np.where(mask, logits - top, 0.0), axis=1)
        value = float(np.mean(np.log(total[:, 0]) - picked))
        residual = np.where(mask, p - target, 0.0)
        grad_w = f.T @ np.einsum("ec,ecm->em", residual, padded) / len(f) + 2 * penalty * w
        grad_beta = float(np.sum(residual * log_count)) / len(f)
        return value + penalty * float(np.sum(w * w)), np.concatenate([grad_w.ravel(), [grad_beta]])

    start = np.zeros(q * m + 1)
    start[:m] = 1.0 / max(m, 1)  # equal weights on every member to begin with
    found = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 300})
    return {"weights": np.ascontiguousarray(found.x[:-1].reshape(q, m)), "popularity": np.array([found.x[-1]])}


def fwls_apply(params: Mapping[str, np.ndarray], requests: np.ndarray, scores: np.ndarray,
               item_log_count: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """FWLS's answer for rows of items (``scores``: rows x members) of the requests
    ``requests`` (requests x request features); ``episode`` is each row's request."""
    out = np.sum(scores * (requests @ params["weights"])[episode], axis=1)
    if "intercept" in params:
        return out + (requests @ params["intercept"])[episode]
    return out + float(params["popularity"][0]) * item_log_count


def _pad(table: Table, values: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row values into (episodes, width, columns), with the mask of real rows."""
    n = len(table.sizes)
    out = np.zeros((n, width, values.shape[1]))
    mask = np.arange(width)[None, :] < table.sizes[:, None]
    out[mask] = values
    return out, mask


# --- LightGBM -------------------------------------------------------------------------------

def lgbm_fit(table: Table, valid: Table, features: Features, task: str, seed: int) -> str:
    """A LightGBM lambdarank ranker (next-item) or L1 regressor (ratings), its rounds stopped
    early on the validation episodes; returned in LightGBM's own text format."""
    import lightgbm as lgb

    params = {"learning_rate": 0.1, "num_leaves": 31, "min_data_in_leaf": 50,
              "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
              "seed": seed, "deterministic": True, "force_row_wise": True, "num_threads": 1,
              "verbosity": -1}
    if task == "next-item":
        # LightGBM's own NDCG does not count ties against the model, and a young ensemble of
        # trees ties many candidates: its rounds are stopped on the protocol's NDCG@10 instead.
        params |= {"objective": "lambdarank", "metric": "None", "lambdarank_truncation_level": 20}
    else:
        # The rating tables' headline is MAE, which the median minimises, not the mean: an L1
        # objective (ML-100k validation MAE 0.799 against 0.830 for least squares).
        params |= {"objective": "regression_l1", "metric": "l1", "learning_rate": 0.05, "num_leaves": 15}
    names = [_safe(n) for n in features.names()]

    def dataset(t: Table, reference: Any = None) -> Any:
        return lgb.Dataset(t.x, label=t.labels, group=t.sizes if task == "next-item" else None,
                           feature_name=names, categorical_feature=features.categorical(),
                           reference=reference, free_raw_data=False)

    train = dataset(table)
    callbacks = [lgb.early_stopping(30, verbose=False)] if len(valid.sizes) else []
    booster = lgb.train(params, train, num_boost_round=300 if task == "next-item" else 500,
                        valid_sets=[dataset(valid, train)] if len(valid.sizes) else None,
                        feval=target_ndcg(valid.sizes) if task == "next-item" else None,
                        callbacks=callbacks)
    return booster.model_to_string(num_iteration=booster.best_iteration or None)


def target_ndcg(sizes: np.ndarray) -> Any:
    """A LightGBM evaluation function: mean NDCG@10 of each episode's target (its first row)
    among its candidates, ties counted against, as the protocol scores it."""
    width = int(sizes.max())
    mask = np.arange(width)[None, :] < sizes[:, None]

    def evaluate(predictions: np.ndarray, _: Any) -> tuple[str, float, bool]:
        scores = np.full(mask.shape, -np.inf)
        scores[mask] = predictions
        rank = 1 + np.count_nonzero(scores[:, 1:] >= scores[:, :1], axis=1)
        return "target_ndcg@10", float(np.mean(np.where(rank <= 10, 1.0 / np.log2(rank + 1), 0.0))), True

    return evaluate


def lgbm_booster(text: str) -> Any:
    import lightgbm as lgb

    return lgb.Booster(model_str=text)


def lgbm_apply(booster: Any, rows: np.ndarray, scores: np.ndarray, task: str) -> np.ndarray:
    out = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    if task == "next-item" and scores.shape[1]:
        out = out + TIE_BREAK * scores.mean(axis=1) / (1.0 + np.abs(scores.mean(axis=1)).max())
    return out


def lgbm_contributions(booster: Any, rows: np.ndarray) -> np.ndarray:
    """Per-row contribution of each feature to the answer (TreeSHAP, LightGBM's own)."""
    return np.asarray(booster.predict(rows, pred_contrib=True, num_threads=1))[:, :-1]


def _safe(name: str) -> str:
    """LightGBM refuses some characters in feature names."""
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)
