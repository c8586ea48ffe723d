"""The two baselines every transfer model must beat: the target domain alone, and one
factorisation over both domains.

``tgt`` is the honest target-only model: thaw's ``mf`` on the target, cold users folded in from
their target support and, with none, popularity's shrunk item means (ratings) or the average
training user (ranking). PTUPCDR's public baseline leaves cold users' embeddings at their random
initialisation instead, which makes any transfer look several times better than it is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Self

import numpy as np

from thaw.data.schema import Dataset, Interactions
from thaw.models.base import Context, Recommender, Validator, usable_validator, validation_score
from thaw.models.mf import MatrixFactorization
from thaw.transfer.base import cold_means, has_source, selection, source_domain


class TargetOnly(MatrixFactorization):
    """Target-only MF with fold-in (``tgt``): what transfer is measured against (it ignores
    ctx.source).

    A cold user with no target history is given popularity's ratings (``cold_means``), not the
    factorisation's mean + item bias: those biases are fitted beside every training user's own
    bias under a penalty that grows with the item's ratings, so a rare item's few ratings are
    hardly shrunk (on ML-100k drama-comedy, tgt's K = 0 MAE was 0.856 against pop's 0.848).
    With it the negative-transfer alarm never compares transfer with a baseline weaker than
    popularity. From one target interaction on, the user is folded in as ``mf`` does.
    """

    name = "tgt"

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        # Settings are chosen on mf's own answers, as for every transfer model's target side
        # (popularity's K = 0 answer does not depend on them), so tgt is that side exactly.
        self.cold_means = None
        super().fit(data, selection(usable_validator(validate)))
        self.cold_means = cold_means(data)
        return self

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        known = ctx.user is not None and self.known_users[ctx.user]
        if len(ctx.history) == 0 and not known and getattr(self, "cold_means", None) is not None:
            return self.cold_means[items]  # (None while fitting, and in a save from before it)
        return super().predict(ctx, items)


class CollectiveMF(Recommender):
    """One MF over both domains' interactions (the "DataAug" / CMF baseline): source items are
    extra columns, so a user's source history and target support are folded in together."""

    name = "cmf"
    predicts_ratings = True
    scores_new_items = True  # as mf does
    needs_source = True

    def __init__(self, dim: int = 32, reg: float = 0.1, seed: int = 0) -> None:
        self.dim, self.reg, self.seed = dim, reg, seed

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        source = source_domain(data, self.name)
        self.n_target_items = data.n_items
        both = data.interactions.concat(self._shifted(source.interactions))
        joined = Dataset(f"{data.name}+source", both, data.user_ids,
                         np.concatenate([data.item_ids, source.item_ids]).astype(object),
                         rating_scale=data.rating_scale)
        validate = selection(usable_validator(validate))
        if validate is None:
            self.mf = MatrixFactorization(self.dim, self.reg, grid=(self.reg,), seed=self.seed).fit(joined)
            return self
        # The validator scores this model, whose contexts carry the source: reg is chosen on it
        # (mf's own grid), and the best fit is kept rather than made again.
        fits, values = {}, {}
        for reg in MatrixFactorization().grid:
            self.mf = fits[reg] = MatrixFactorization(self.dim, reg, grid=(reg,), seed=self.seed).fit(joined)
            values[reg] = validation_score(validate, self, f"with reg {reg}")
        self.mf = fits[max(values, key=values.get)]
        return self

    def _shifted(self, source: Interactions) -> Interactions:
        return replace(source, item=source.item + self.n_target_items)

    def _history(self, ctx: Context) -> Interactions:
        if not has_source(ctx):
            return ctx.history
        return ctx.history.concat(self._shifted(ctx.source))

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.mf.output(self.mf.user_vector(self._history(ctx), "next-item"), items, "next-item")

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.mf.output(self.mf.user_vector(self._history(ctx), "rating"), items, "rating")
