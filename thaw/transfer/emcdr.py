"""EMCDR (Man et al., IJCAI 2017): embed each domain, then map source user factors to target
user factors with one function learned on the users who are in both.

thaw's version: each domain factorised by thaw's ALS; the mapping an MLP (one tanh hidden
layer, as the paper's preferred variant) fitted by mean squared error on the overlap users'
(source factor, target factor) pairs, its number of steps chosen on validation users. One
global map for everybody, which is what PTUPCDR improves on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from thaw.compute import one_thread
from thaw.data.schema import Interactions
from thaw.models.base import Validator
from thaw.models.neural import Trainer
from thaw.transfer.base import TASKS, TransferModel


def mapping_net(d_in: int, d_out: int, hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out))


class EMCDR(TransferModel):
    """Embedding and mapping: one MLP from source to target user factors."""

    name = "emcdr"

    def __init__(self, dim: int = 32, reg: float = 0.1, prior_weight: float = 3.0, hidden: int = 64,
                 lr: float = 3e-3, weight_decay: float = 1e-4, epochs: int = 40,
                 steps_per_epoch: int = 25, patience: int = 3, seed: int = 0) -> None:
        super().__init__(dim, reg, prior_weight, seed)
        self.hidden, self.lr, self.weight_decay = hidden, lr, weight_decay
        self.epochs, self.steps_per_epoch, self.patience = epochs, steps_per_epoch, patience

    def _rebuild(self) -> None:
        if getattr(self, "target_mf", None) is None:
            return
        self.net = nn.ModuleDict({task.replace("-", "_"): mapping_net(d, d, self.hidden)
                                  for task, d in zip(TASKS, (self.dim, self.dim + 1), strict=True)})

    @one_thread()
    def _fit_map(self, task: str, x: np.ndarray, y: np.ndarray, users: np.ndarray,
                 sources: list[Interactions], targets: list[Interactions],
                 validate: Validator | None) -> None:
        net = self._network(task)
        # Factors are standardised per dimension for the fit and mapped back after.
        scales = {"x_mean": x.mean(0), "x_std": x.std(0) + 1e-8, "y_mean": y.mean(0), "y_std": y.std(0) + 1e-8}
        setattr(self, f"scale_{task.replace('-', '_')}", scales)
        xs = torch.tensor((x - scales["x_mean"]) / scales["x_std"], dtype=torch.float32)
        ys = torch.tensor((y - scales["y_mean"]) / scales["y_std"], dtype=torch.float32)
        trainer = Trainer(net.parameters(), lr=self.lr)
        for group in trainer.optimizer.param_groups:
            group["weight_decay"] = self.weight_decay

        self._train_map(net, validate, lambda: [trainer.step(((net(xs) - ys) ** 2).mean())
                                                for _ in range(self.steps_per_epoch)])

    @torch.no_grad()
    def _map(self, task: str, vector: np.ndarray, source: Interactions) -> np.ndarray:
        s = getattr(self, f"scale_{task.replace('-', '_')}")
        x = torch.tensor((vector - s["x_mean"]) / s["x_std"], dtype=torch.float32)[None]
        return self._network(task)(x)[0].double().numpy() * s["y_std"] + s["y_mean"]
