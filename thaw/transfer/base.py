"""What the transfer models share: one factorisation per domain, and a transferred guess of the
user's target factor that the target support then corrects.

Each domain is fitted with thaw's own ALS (``mf``), so the target side is exactly the
target-only baseline ``tgt``: a transfer model differs from it only in the guess it hands the
target fold-in as a prior. With no target support the guess is the answer; with K target
interactions the fold-in weighs the guess against the support (``prior_weight``, chosen on
validation users), so transfer fades as the user's own target history grows, and a model
that transfers nothing useful can be told apart from one that does at every K.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import numpy as np
import torch

from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import by_user, chronological_order
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender, Validator, choose_on_validation, train_epochs, usable_validator
from thaw.models.baselines import Popularity
from thaw.models.mf import MatrixFactorization

TASKS = ("next-item", "rating")


class MAEValidator:
    """Rating models scored by minus the mean over validation episodes of each episode's MAE;
    any other model as the wrapped validator scores it (NDCG@10)."""

    def __init__(self, inner: Validator) -> None:
        self.inner = inner
        self.episodes = inner.episodes  # type: ignore[attr-defined]

    def __call__(self, model: Recommender) -> float:
        if not model.predicts_ratings:
            return float(self.inner(model))
        eps = self.episodes
        outputs = model.predict_many([e.context for e in eps], [e.candidates for e in eps])
        return -float(np.mean([np.mean(np.abs(np.asarray(o, dtype=np.float64) - e.truth))
                               for o, e in zip(outputs, eps, strict=True)]))


def selection(validate: Validator | None) -> Validator | None:
    """The validator every cross-domain model selects with (its regularisation, fold-in prior,
    mapping epochs and prior weight): on the rating protocol, minus the mean per-episode MAE.

    One metric for everything the transfer protocol chooses on validation users. The stack
    over these models learns its routes and blends by per-episode MAE
    (``thaw.stack.router.episode_value``), and MAE is the rating tables' headline, as in the
    EMCDR and PTUPCDR papers; thaw's validator selects rating models by RMSE, so a member
    would otherwise be tuned for one error and weighed by another. MAE also keeps a few users
    with extreme ratings from making every choice. Next-item selection stays NDCG@10 (what
    the stack uses too); a validator that does not hold its episodes (not
    ``SplitValidator``) is used as given."""
    if validate is None or getattr(validate, "protocol", None) != "rating" or not hasattr(validate, "episodes"):
        return validate
    return validate if isinstance(validate, MAEValidator) else MAEValidator(validate)


def source_domain(data: Dataset, model: str) -> Dataset:
    """The source domain a cross-domain data set carries, or a clear error."""
    if data.source_domain is None:
        raise ThawError(f"model '{model}' transfers from another domain, and '{data.name}' has "
                        "none: fit it on a cross-domain split (thaw.transfer.cross_domain_split, "
                        "`thaw transfer`)")
    return data.source_domain


def has_source(ctx: Context) -> bool:
    return ctx.source is not None and len(ctx.source) > 0


def cold_means(data: Dataset) -> np.ndarray:
    """The rating of each target item for a cold user with no target history and nothing to
    transfer: popularity's item means, shrunk toward the global mean (``Popularity``)."""
    return Popularity().fit(data).item_means


class TransferModel(Recommender):
    """Base of emcdr and ptupcdr: subclasses learn ``_fit_map`` (source vectors of overlap
    users -> their target vectors, per task) and ``_map`` (one user's transferred guess)."""

    predicts_ratings = True
    scores_new_items = True  # the target side is mf's
    needs_source = True
    prior_grid: tuple[float, ...] = (0.3, 3.0, 30.0)

    def __init__(self, dim: int = 32, reg: float = 0.1, prior_weight: float = 3.0,
                 seed: int = 0) -> None:
        self.dim, self.reg, self.prior_weight, self.seed = dim, reg, prior_weight, seed
        self.task = "next-item"

    def set_task(self, protocol: str) -> None:
        self.task = protocol

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        source = source_domain(data, self.name)
        validate = selection(usable_validator(validate))
        # The target side is tgt's own (reg chosen on validation the same way, and popularity's
        # ratings with neither target history nor source), so any gap between this model and
        # tgt is the transfer's.
        self.target_mf = MatrixFactorization(self.dim, self.reg, seed=self.seed).fit(data, validate)
        self.cold_means = cold_means(data)
        self.source_mf = MatrixFactorization(self.dim, self.reg, grid=(self.reg,),
                                             seed=self.seed).fit(source)
        target_hist = by_user(data.interactions.take(chronological_order(data.interactions, self.seed)))
        source_hist = by_user(source.interactions.take(chronological_order(source.interactions, self.seed)))
        users = np.array(sorted(set(target_hist) & set(source_hist)), dtype=np.int64)
        if len(users) < 2:
            raise ThawError(f"model '{self.name}': {len(users)} training users have both a source "
                            "and a target history; a mapping needs more")
        self.source_rating_floor = float(source.interactions.rating.mean())
        for task in (self.task, *(t for t in TASKS if t != self.task)):
            x = np.stack([self.source_mf.user_vector(source_hist[u], task) for u in users])
            y = np.stack([self.target_mf.user_vector(target_hist[u], task) for u in users])
            self._fit_map(task, x, y, users, [source_hist[u] for u in users],
                          [target_hist[u] for u in users], validate if task == self.task else None)
        if validate is not None and len(self.prior_grid) > 1:
            choose_on_validation(self, validate, "prior_weight", self.prior_grid, "prior weight")
        return self

    def _fit_map(self, task: str, x: np.ndarray, y: np.ndarray, users: np.ndarray,
                 sources: list[Interactions], targets: list[Interactions],
                 validate: Validator | None) -> None:
        raise NotImplementedError

    def _map(self, task: str, vector: np.ndarray, source: Interactions) -> np.ndarray:
        raise NotImplementedError

    def _network(self, task: str) -> Any:
        """The task's mapping network (``self.net``, made seeded on first use by ``_rebuild``)."""
        if getattr(self, "net", None) is None:
            torch.manual_seed(self.seed)
            self._rebuild()
        return self.net[task.replace("-", "_")]

    def _train_map(self, net: Any, validate: Validator | None, steps: Callable[[], list[float]]) -> None:
        """Up to ``self.epochs`` epochs of ``steps()`` (one epoch's losses) on one task's
        mapping, stopped early on validation users when ``validate`` is given."""
        def epoch() -> float:
            net.train()
            losses = steps()
            net.eval()
            return float(np.mean(losses))

        train_epochs(self, validate, epochs=self.epochs, patience=self.patience, train_epoch=epoch,
                     net=net)
        net.eval()

    def transferred(self, source: Interactions, task: str) -> np.ndarray:
        """The guess of a user's target vector from their source history alone."""
        return self._map(task, self.source_mf.user_vector(source, task), source)

    def _vector(self, ctx: Context, task: str) -> np.ndarray:
        if not has_source(ctx):  # nothing to transfer: exactly tgt
            return self.target_mf.user_vector(ctx.history, task)
        return self.target_mf.user_vector(ctx.history, task, self.transferred(ctx.source, task),
                                          self.prior_weight)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.target_mf.output(self._vector(ctx, "next-item"), items, "next-item")

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        if len(ctx.history) == 0 and not has_source(ctx) and getattr(self, "cold_means", None) is not None:
            return self.cold_means[items]  # tgt's answer (a save from before it: mf's, below)
        return self.target_mf.output(self._vector(ctx, "rating"), items, "rating")
