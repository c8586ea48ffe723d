"""What thaw's torch models share: rows of inputs, masked losses, the optimiser step, and the
scoring path.

Rows are dicts of arrays with one entry per row: the model's inputs plus ``target`` and
``mask``. A task batch is rows padded to common sizes and stacked into tensors, (tasks, rows,
...); padded rows have mask 0 and no loss counts them.

The scoring path: a network scores in a float64 copy of itself (``float64_copy``), a chunk of
contexts at a time (``chunked``), and the scores are rounded to float32 (``exact_scores``).
float64 rounding can still depend on which contexts share a chunk and on padding; rounding to
float32 removes that, so ``score`` and ``score_many`` give the same numbers. Items never seen
in training score -inf: their embeddings are untrained, and any finite score would put them
among the trained items (a score of 0 ranks them above every item with a negative one).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from thaw import distributed

if TYPE_CHECKING:
    from thaw.models.base import Context

Rows = dict[str, np.ndarray]
SCORE_CHUNK = 256  # contexts scored in one forward pass


# --- rows and task batches -------------------------------------------------------------------

@dataclass(frozen=True)
class TaskBatch:
    """T tasks padded to common sizes: every tensor is (T, rows, ...)."""

    support: dict[str, Tensor]
    query: dict[str, Tensor]

    def __len__(self) -> int:
        return int(self.support["mask"].shape[0])

    def to(self, device: torch.device) -> TaskBatch:
        if device.type == "cpu":
            return self
        return TaskBatch({k: v.to(device) for k, v in self.support.items()},
                         {k: v.to(device) for k, v in self.query.items()})

    def part(self, rows: slice) -> TaskBatch:
        """The tasks ``rows`` of the batch."""
        return TaskBatch({k: v[rows] for k, v in self.support.items()},
                         {k: v[rows] for k, v in self.query.items()})


def pad(rows: Rows, size: int) -> Rows:
    """Cut or pad rows to ``size``, adding a 0/1 mask."""
    n = len(rows["target"])
    out = {}
    for key, value in rows.items():
        value = value[:size]
        if n < size:
            filler = np.zeros((size - n, *value.shape[1:]), dtype=value.dtype)
            value = np.concatenate([value, filler])
        out[key] = value
    out["mask"] = (np.arange(size) < n).astype(np.float32)
    return out


def stack_rows(rows: Sequence[Rows], dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Rows of equal shapes as tensors with a leading dim; floating ones as ``dtype`` if given."""
    out = {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}
    if dtype is None:
        return out
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}


def pad_and_stack(rows: Sequence[Rows], dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """Rows of different lengths padded to the longest (at least one row) and stacked."""
    size = max(1, max(len(r["target"]) for r in rows))
    return stack_rows([pad(r, size) for r in rows], dtype)


def inputs(batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A batch without its ``target`` and ``mask``: what the network reads."""
    return {k: v for k, v in batch.items() if k not in ("target", "mask")}


# --- losses and the optimiser step -----------------------------------------------------------

LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""loss(prediction, target, mask) -> scalar; padded rows have mask 0 and must not count."""


def masked_mse(prediction: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the rows whose mask is 1."""
    return ((prediction - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


def masked_bce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Binary cross-entropy with logits over the rows whose mask is 1."""
    losses = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


class Trainer:
    """One optimiser step per loss: Adam on ``params``, the gradient norm clipped to ``clip``.

    Under torch.distributed (``thaw.distributed``) each rank passes the loss of its share of
    the batch and that share's ``weight`` (its rows over the batch's rows, from
    ``share_of``); the gradients are summed over ranks before clipping, so every rank takes the
    step one process would take on the whole batch, and the returned loss is the batch's.
    """

    def __init__(self, params: Iterable[Tensor], *, lr: float = 1e-3, clip: float | None = 5.0,
                 weight_decay: float = 0.0) -> None:
        self.params = list(params)
        distributed.broadcast_parameters(self.params)
        self.optimizer = torch.optim.Adam(self.params, lr=lr, weight_decay=weight_decay)
        self.clip = clip

    def step(self, loss: Tensor | None, weight: float = 1.0) -> float:
        """``loss`` is None for a rank whose share of the batch is empty."""
        self.optimizer.zero_grad()
        value = 0.0
        if loss is not None:
            (loss * weight).backward()
            value = float(loss.detach()) * weight
        if distributed.active():
            (value,) = distributed.sum_gradients(self.params, [value])
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        return value


def share_of(batch: TaskBatch, weigh: str = "tasks") -> tuple[TaskBatch | None, float]:
    """This rank's share of a batch of tasks and its weight: its tasks over the batch's tasks
    (a loss averaged over tasks), or with ``weigh="rows"`` its unmasked rows over the batch's
    (a loss averaged over every support and query row). The whole batch and 1.0 in one
    process; None when the share is empty."""
    if not distributed.active():
        return batch, 1.0
    part = distributed.share(len(batch))
    if part.start == part.stop:
        return None, 0.0
    mine = batch.part(part)
    if weigh == "tasks":
        return mine, (part.stop - part.start) / len(batch)
    rows = lambda b: float(b.support["mask"].sum() + b.query["mask"].sum())  # noqa: E731
    return mine, rows(mine) / max(rows(batch), 1.0)


# --- the scoring path ------------------------------------------------------------------------

def float64_copy(net: nn.Module) -> nn.Module:
    """A float64 copy of ``net`` in eval mode, to score with; the trained net is untouched."""
    return copy.deepcopy(net).double().eval()


def chunked(score_chunk: Callable[[list[Context], list[np.ndarray]], Sequence[np.ndarray]],
            contexts: Sequence[Context], items: Sequence[np.ndarray], *, size: int = SCORE_CHUNK,
            order: Sequence[int] | np.ndarray | None = None) -> list[np.ndarray]:
    """``score_chunk(contexts, items)`` on at most ``size`` contexts at a time, taken in
    ``order`` (default: as given), each context's output returned in its own place."""
    if len(contexts) != len(items):
        raise ValueError("contexts and items differ in length")
    index = np.arange(len(contexts)) if order is None else np.asarray(order)
    out: list[np.ndarray] = [np.empty(0)] * len(contexts)
    for start in range(0, len(index), size):
        chunk = index[start:start + size]
        values = score_chunk([contexts[i] for i in chunk], [items[i] for i in chunk])
        for i, value in zip(chunk, values, strict=True):
            out[i] = value
    return out


def exact_scores(values: np.ndarray, items: np.ndarray, known: np.ndarray) -> np.ndarray:
    """One context's float64 outputs rounded to float32, and -inf for the items not ``known``
    (``known``: one flag per item, true for items seen in training)."""
    scores = np.asarray(values, dtype=np.float64).astype(np.float32).astype(np.float64)
    scores[~known[np.asarray(items, dtype=np.int64)]] = -np.inf
    return scores
