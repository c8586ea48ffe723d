"""HML (hybrid meta-learning): several meta-learned initialisations, hard task clustering.

Each task is adapted from every initialisation; it joins the cluster whose adapted model has
the lowest loss on the task's query, and only that initialisation learns from it. At test time
the query is unknown, so the support is resampled into two parts, Sup_s to adapt and Sup_q to
choose the initialisation (over a few folds, to steady the choice when K is small); the chosen
one is then adapted on the whole support. With one initialisation
this is MeLU, number for number (the first initialisation is MeLU's own decision layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap

from thaw.data.schema import Dataset
from thaw.meta.maml import Params
from thaw.meta.melu import FeatureMetaLearner
from thaw.models.base import Context
from thaw.models.neural import TaskBatch, Trainer, pad_and_stack


class HML(FeatureMetaLearner):
    """MeLU's network with ``n_inits`` initialisations of its adapted decision layers."""

    name = "hml"

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

    def _train_step(self, trainer: Trainer, batch: TaskBatch) -> float:
        losses = torch.stack([self.maml.task_losses(batch, fast=init)
                              for init in self.initialisations()], dim=1)  # (tasks, inits)
        assign = losses.detach().argmin(dim=1)  # hard task clustering on the query loss
        self.cluster_sizes += np.bincount(assign.numpy(), minlength=self.n_inits)
        return trainer.step(losses.gather(1, assign[:, None]).mean())

    def _trained(self) -> nn.Module:
        return nn.ModuleList([self.net, self.extra])

    # --- test time: choose the initialisation from the support alone --------------------

    def choose(self, contexts: Sequence[Context]) -> np.ndarray:
        """Index of the initialisation each user is assigned to, from their support alone.

        The support is resampled into Sup_s (adapt) and Sup_q (judge) several times, one fold
        of Sup_q at a time, and each initialisation's Sup_q losses are summed over the folds.
        """
        inits = self.initialisations()
        if len(inits) == 1:
            return np.zeros(len(contexts), dtype=np.int64)
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
        return total.argmin(dim=1).numpy()

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
