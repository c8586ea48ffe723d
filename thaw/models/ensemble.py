"""Seed ensembles: one model trained from several seeds, its answers averaged.

A neural sequence model's ranking for one user moves with its seed (initial weights, batch
order, dropout) by about as much as the stack's members differ from one another; the average of
a few seeds keeps what they agree on. Issue 21 lists it among the cheap member gains for the
stack, to be kept only where validation users say it helps (BENCHMARKS section 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from thaw.data.schema import Dataset
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender, Validator, normalise


def mean_z_scores(models: Sequence[Recommender], contexts: Sequence[Context],
                  items: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each request's scores averaged over ``models`` after z-scoring them per request (their
    scales differ): an ensemble's answer, or a blend with nothing learned."""
    answers = [model.score_many(contexts, items) for model in models]
    return [np.mean([normalise(a[row]) for a in answers], axis=0) for row in range(len(contexts))]


class SeedEnsemble(Recommender):
    """``seeds`` copies of the registered model ``copies_of`` (seeds ``seed``, ``seed + 1``, ...),
    each fitted and stopped on validation as it would be alone. Scores are the mean of the
    copies' per-request z-scores (their scales differ from seed to seed); ranking only, as the
    models copied are."""

    copies_of: str = ""
    """The registry name of the model copied; each subclass sets its own (its constructor
    parameters are the ensemble's too: thaw/registry.py's ``parameters``)."""

    def __init__(self, *, seeds: int = 3, seed: int = 0, **params: Any) -> None:
        if seeds < 1:
            raise ThawError(f"a seed ensemble needs at least 1 seed, not {seeds}")
        from thaw.registry import parameters

        unknown = sorted(set(params) - set(parameters(self.copies_of)))
        if unknown:
            raise ThawError(f"{self.copies_of} takes no parameter {', '.join(unknown)}")
        self.seeds, self.seed, self.params = seeds, seed, dict(params)
        self.task = "next-item"
        self.copies: list[Recommender] = []

    def set_task(self, protocol: str) -> None:
        self.task = protocol

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        from thaw.registry import make_model

        self.copies = []
        for offset in range(self.seeds):
            copy = make_model(self.copies_of, seed=self.seed + offset, **self.params)
            copy.set_task(self.task)
            self.copies.append(copy.fit(data, validate=validate))
        return self

    def score_many(self, contexts: Sequence[Context], items: Sequence[np.ndarray]) -> list[np.ndarray]:
        return mean_z_scores(self.copies, contexts, items)

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        return self.score_many([ctx], [items])[0]


class SASRecSeeds(SeedEnsemble):
    """SASRec averaged over three seeds."""

    name = "sasrec-x3"
    copies_of = "sasrec"
    scores_new_items = True  # as SASRec: from the item's genres and year


class GRU4RecSeeds(SeedEnsemble):
    """GRU4Rec averaged over three seeds."""

    name = "gru4rec-x3"
    copies_of = "gru4rec"
    scores_new_items = True  # as GRU4Rec: from the item's genres and year
