"""HML (hybrid meta-learning): several meta-learned initialisations, hard task clustering.

Each task is adapted from every initialisation; it joins the cluster whose adapted model has
the lowest loss on the task's query, and only that initialisation learns from it. At test time
the query is unknown, so the support is resampled into two parts, Sup_s to adapt and Sup_q to
choose the initialisation (over a few folds, to steady the choice when K is small); the chosen
one is then adapted on the whole support. With one initialisation
this is MeLU, number for number (the first initialisation is MeLU's own decision layers).

``hml-soft`` (``SoftHML``) replaces the hard test-time choice with a weighted average over the
initialisations and can train the choice the way it is used; ``hml`` stays as the paper has it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from thaw import distributed
from thaw.data.schema import Dataset
from thaw.meta.maml import Params
from thaw.meta.melu import FeatureMetaLearner
from thaw.models.base import Context, Validator, choose_on_validation, usable_validator
from thaw.models.neural import TaskBatch, Trainer, pad_and_stack, share_of


class HML(FeatureMetaLearner):
    """MeLU's network with ``n_inits`` initialisations of its adapted decision layers."""

    name = "hml"
    adapts_once = False  # the initialisation is chosen per user (``adapted_weights``)

    def __init__(self, n_inits: int = 3, n_folds: int = 3, **kwargs) -> None:
        # A slower outer loop than MeLU's: with a fast one the initialisation that wins the
        # first assignments learns fastest and keeps winning, and the others starve.
        super().__init__(**{"lr": 1e-3, **kwargs})
        if n_inits < 1 or n_folds < 1:
            raise ValueError("n_inits and n_folds must be at least 1")
        self.n_inits, self.n_folds = n_inits, n_folds

    def _build(self, data: Dataset) -> None:
        super()._build(data)
        self.cluster_sizes = np.zeros(self.n_inits, dtype=np.int64)

    def _rebuild(self) -> None:
        super()._rebuild()
        if getattr(self, "data", None) is None:  # never fitted
            return
        fast, _ = self.maml.split_params()
        generator = torch.Generator().manual_seed(self.seed + 1)
        self.extra = nn.ModuleList()
        for _ in range(self.n_inits - 1):
            # Other initialisations start from fresh draws of the same layers' init scheme.
            copies = {}
            for name, p in fast.items():
                fresh = torch.empty_like(p)
                if p.dim() > 1:
                    nn.init.kaiming_uniform_(fresh, a=5 ** 0.5, generator=generator)
                else:
                    fresh.copy_(p.detach() + 0.1 * torch.randn(p.shape, generator=generator))
                copies[name.replace(".", "__")] = nn.Parameter(fresh)
            self.extra.append(nn.ParameterDict(copies))

    def initialisations(self) -> list[Params]:
        fast, _ = self.maml.split_params()
        return [fast] + [{k.replace("__", "."): v for k, v in d.items()} for d in self.extra]

    def _outer_params(self) -> list[Tensor]:
        return list(self.net.parameters()) + list(self.extra.parameters())

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        super().fit(data, validate)
        # each rank counted the tasks of its own shares (torch.distributed)
        self.cluster_sizes = np.sum(distributed.gather(self.cluster_sizes), axis=0)
        return self

    def _train_step(self, trainer: Trainer, batch: TaskBatch) -> float:
        part, weight = share_of(batch)
        if part is None:
            return trainer.step(None)
        losses = torch.stack([self.maml.task_losses(part, fast=init)
                              for init in self.initialisations()], dim=1)  # (tasks, inits)
        assign = losses.detach().argmin(dim=1)  # hard task clustering on the query loss
        self.cluster_sizes += np.bincount(assign.cpu().numpy(), minlength=self.n_inits)
        return trainer.step(losses.gather(1, assign[:, None]).mean(), weight)

    def _trained(self) -> nn.Module:
        return nn.ModuleList([self.net, self.extra])

    # --- test time: choose the initialisation from the support alone --------------------

    def choose(self, contexts: Sequence[Context]) -> np.ndarray:
        """Index of the initialisation each user is assigned to, from their support alone."""
        if len(self.initialisations()) == 1:
            return np.zeros(len(contexts), dtype=np.int64)
        return self.support_losses(contexts).argmin(dim=1).numpy()

    def support_losses(self, contexts: Sequence[Context]) -> Tensor:
        """(users, initialisations): how well each initialisation does on the user's support.

        The support is resampled into Sup_s (adapt) and Sup_q (judge) several times, one fold
        of Sup_q at a time, and each initialisation's Sup_q losses are summed over the folds.
        """
        inits = self.initialisations()
        _, shared = self.maml.detached_params(None)
        folds = [self._folds(c) for c in contexts]
        total = torch.zeros(len(contexts), len(inits))
        for f in range(self.n_folds):
            sup_s = pad_and_stack([self._rows_of(c, fs[f][0]) for c, fs in zip(contexts, folds, strict=True)])
            sup_q = pad_and_stack([self._rows_of(c, fs[f][1]) for c, fs in zip(contexts, folds, strict=True)])
            for m, init in enumerate(inits):
                adapted = self.maml.adapted(sup_s, fast=init)
                with torch.no_grad():
                    total[:, m] += vmap(self.maml.batch_loss, in_dims=(0, None, 0))(
                        adapted, shared, sup_q)
        return total

    def _folds(self, ctx: Context) -> list[tuple[np.ndarray, np.ndarray]]:
        """``n_folds`` (Sup_s, Sup_q) index pairs; a seeded shuffle decides the folds.

        A support of one interaction is judged on itself; folds past the support size repeat.
        """
        n = len(ctx.history)
        if n < 2:
            index = np.arange(n)
            return [(index, index)] * self.n_folds
        rng = np.random.default_rng([self.seed, n, *ctx.history.item.tolist()])
        fold_of = rng.permutation(n) % min(self.n_folds, n)
        out = []
        for f in range(self.n_folds):
            held = fold_of == f % min(self.n_folds, n)
            out.append((np.flatnonzero(~held), np.flatnonzero(held)))
        return out

    def _rows_of(self, ctx: Context, index: np.ndarray) -> dict[str, np.ndarray]:
        sub = Context(ctx.user, ctx.history.take(index), ctx.profile, ctx.source)
        return self._support_rows(sub)

    def adapted_weights(self, contexts: Sequence[Context]) -> Params:
        inits = self.initialisations()
        support = pad_and_stack([self._support_rows(c) for c in contexts])
        if len(inits) == 1:
            return self.maml.adapted(support)
        chosen = torch.as_tensor(self.choose(contexts))
        per_init = [self.maml.adapted(support, fast=init) for init in inits]
        rows = torch.arange(len(contexts))
        return {k: torch.stack([p[k] for p in per_init], dim=0)[chosen, rows] for k in per_init[0]}


def choice_weights(losses: Tensor, temperature: float) -> Tensor:
    """Weights over initialisations from their support losses, (users, inits): softmax of
    -loss / temperature; temperature 0 is the hard choice (one-hot on the lowest loss, the
    first of any tie), infinity the plain average."""
    if temperature == 0:
        return nn.functional.one_hot(losses.argmin(dim=1), losses.shape[1]).to(losses.dtype)
    if np.isinf(temperature):
        return torch.full_like(losses, 1.0 / losses.shape[1])
    return torch.softmax(-losses / temperature, dim=1)


class SoftHML(HML):
    """HML with a soft test-time choice: every initialisation is adapted on the whole support
    and the outputs (ratings, or logits for ranking) are averaged with weights
    ``choice_weights(support losses, temperature)``.

    Why: HML's hard choice from a support of one to three interactions is close to a coin
    toss, and a wrong pick costs a whole cluster's error; a weighted average costs little
    when the pick is uncertain and becomes the hard choice when one initialisation clearly
    fits best (temperature 0 is ``hml``'s choice exactly). The temperature is chosen from
    ``temperature_grid`` on validation users after training. ``train_choice`` "support" also
    trains the choice the way it is used: each training task is assigned (softly, at
    ``train_temperature``) by adapting on a random half of its support and judging on the
    other half, not by its query loss, which a cold user never has; "query" keeps the paper's
    assignment. The default (None) is "support" under the rating protocol and "query" under
    next-item ranking: on ML-100k's new-user split (one seed, test users) each was clearly the
    better there, and the other was below pop. With ``train_choice="query"``, ``lr=1e-3`` and
    temperature 0 it is ``hml`` number for number.
    """

    name = "hml-soft"
    chosen_from = {"temperature": "temperature_grid"}
    _transient = ("_coin",)  # the training split's random stream; not needed to score

    def __init__(self, temperature: float = 0.1,
                 temperature_grid: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, float("inf")),
                 train_choice: str | None = None, train_temperature: float = 0.1, **kwargs) -> None:
        # MeLU's outer learning rate, not hml's slower one: a soft assignment keeps every
        # initialisation learning, so the starvation the slower rate guards against is gone
        # (and on ML-100k's validation-stopped runs 1e-3 left hml-soft far behind melu).
        super().__init__(**{"lr": 5e-3, **kwargs})
        if train_choice not in (None, "query", "support"):
            raise ValueError("train_choice must be 'query', 'support' or None (by protocol)")
        self.temperature, self.temperature_grid = temperature, tuple(temperature_grid)
        self.train_choice, self.train_temperature = train_choice, train_temperature

    def set_task(self, protocol: str) -> None:
        super().set_task(protocol)
        self.protocol = protocol

    def choice_in_training(self) -> str:
        """``train_choice``, or by protocol when None: "support" for ratings, "query" for ranking
        (on ML-100k's new-user split each was the better of the two there; see the class doc)."""
        if self.train_choice is not None:
            return self.train_choice
        return "support" if getattr(self, "protocol", "rating") == "rating" else "query"

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        super().fit(data, validate)
        validate = usable_validator(validate)
        if validate is not None and len(self.temperature_grid) > 1 and self.n_inits > 1:
            self.temperature_scores = choose_on_validation(self, validate, "temperature",
                                                           self.temperature_grid, "temperature")
        return self

    def _train_step(self, trainer: Trainer, batch: TaskBatch) -> float:
        if self.choice_in_training() == "query":
            return super()._train_step(trainer, batch)
        inits = self.initialisations()
        half = self._support_halves(batch)  # drawn for the whole batch: every rank's coins agree
        batch, weight = share_of(batch)
        if batch is None:
            return trainer.step(None)
        half = half.part(distributed.share(len(half)))
        losses = torch.stack([self.maml.task_losses(batch, fast=init) for init in inits], dim=1)
        with torch.no_grad():
            judged = torch.stack([self.maml.task_losses(half, fast=init) for init in inits], dim=1)
        weights = choice_weights(judged.detach(), self.train_temperature)
        self.cluster_sizes += np.bincount(judged.argmin(dim=1).cpu().numpy(), minlength=self.n_inits)
        return trainer.step((weights * losses).sum(dim=1).mean(), weight)

    def _support_halves(self, batch: TaskBatch) -> TaskBatch:
        """Each task's support split at random into an adapting half and a judging half; a
        task whose split leaves one half empty is judged on its whole support, as at test time."""
        mask = batch.support["mask"]
        coin = (torch.rand(mask.shape, generator=self._coin) < 0.5).to(mask)
        first, second = mask * coin, mask * (1 - coin)
        whole = ((first.sum(1) == 0) | (second.sum(1) == 0))[:, None]
        first, second = torch.where(whole, mask, first), torch.where(whole, mask, second)
        return TaskBatch({**batch.support, "mask": first}, {**batch.support, "mask": second})

    def _build(self, data: Dataset) -> None:
        super()._build(data)
        self._coin = torch.Generator().manual_seed(self.seed + 2)

    def _mixed(self, contexts: Sequence[Context], rows: dict[str, Tensor]) -> Tensor:
        """Outputs (users, rows): each initialisation adapted on the whole support, weighted."""
        inits = self.initialisations()
        support = pad_and_stack([self._support_rows(c) for c in contexts])
        outputs = torch.stack([self.maml.predict(self.maml.adapted(support, fast=init), rows)
                               for init in inits], dim=1)  # (users, inits, rows)
        if len(inits) == 1:
            return outputs[:, 0]
        weights = choice_weights(self.support_losses(contexts), self.temperature)
        return (weights[:, :, None] * outputs).sum(dim=1)

    def _chunk_outputs(self, contexts: list[Context], items: list[np.ndarray]) -> list[np.ndarray]:
        values = self._mixed(contexts, self._candidate_rows(contexts, items)).numpy().astype(np.float64)
        return [values[t, :len(i)] for t, i in enumerate(items)]

    def _support_fit(self, ctx: Context, support: dict[str, Tensor]) -> Tensor:
        return self._mixed([ctx], support)[0]
