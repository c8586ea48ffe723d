"""Data-parallel training on ``torch.distributed``: every rank takes its share of each batch.

Why not ``DistributedDataParallel``: thaw's meta-learning engine calls the network through
``torch.func.functional_call`` and ``vmap``; under DDP that leaves gradients unsynchronised
without an error, or fails inside the reducer on the second step (pytorch/pytorch #63929,
#102197, #130932). So this layer does the few things DDP does, by hand, for every model that
trains through ``thaw.models.neural.Trainer``:

- every rank builds the same seeded batch and keeps its contiguous share of it (``share``);
- the loss on that share is scaled by the share's weight (its rows over the batch's rows), the
  gradients are summed over ranks in one ``all_reduce`` — so the step equals one process's on
  the whole batch, up to float summation order;
- parameters are broadcast from rank 0 when a trainer starts, and decisions taken from numbers
  (early stopping) follow rank 0's numbers, so ranks cannot drift apart or wait on each other.

The embarrassingly parallel parts (an evaluation's model fits, the stack's fold fits) are split
the other way: each rank runs its share of the jobs ``alone()`` — no collective inside — and the
outcomes are gathered (``gather``).

Nothing here does anything in a single process: ``active()`` is false and every helper returns
its input. Processes are started by ``torchrun`` (or ``thaw fit --nproc N``); gloo on CPU,
NCCL on CUDA. A rank that dies is seen by torchrun, which stops the others at once; a rank that
hangs fails the job after ``TIMEOUT``.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

TIMEOUT = datetime.timedelta(seconds=float(os.environ.get("THAW_DIST_TIMEOUT", "7200")))
"""How long a collective waits for a rank that neither answers nor dies (THAW_DIST_TIMEOUT s):
long, because gathering the outcomes of shared-out jobs waits for the slowest rank's fits."""

_alone = 0  # > 0 inside ``alone()``


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: str = "cpu") -> None:
    """Join the process group torchrun describes (a no-op in a single process)."""
    if not launched() or dist.is_initialized():
        return
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return _alone == 0 and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Inside the block this rank trains by itself: a job that is this rank's alone must not
    wait in a collective for ranks that are busy with other jobs."""
    global _alone
    _alone += 1
    try:
        yield
    finally:
        _alone -= 1


def _grouped() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the group (inside ``alone()`` too: rank 0 still writes)."""
    return dist.get_rank() if _grouped() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes files and prints progress."""
    return rank() == 0


def share(n: int) -> slice:
    """This rank's contiguous share of ``n`` rows (the whole of them in one process)."""
    if not active():
        return slice(0, n)
    r, w = rank(), size()
    return slice(n * r // w, n * (r + 1) // w)


def _device_of(tensors: Sequence[Tensor]) -> torch.device:
    return tensors[0].device if tensors else torch.device("cpu")


def broadcast_parameters(params: Iterable[Tensor]) -> None:
    """Every rank starts from rank 0's parameters."""
    if not active():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def sum_gradients(params: Sequence[Tensor], extra: Sequence[float] = ()) -> list[float]:
    """Sum every parameter's gradient over ranks in one flat ``all_reduce``; ``extra`` numbers
    ride along and come back summed too. A parameter no rank computed a gradient for keeps
    none, as in one process (Adam then leaves it alone)."""
    if not active():
        return list(extra)
    params = list(params)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    device = _device_of(grads)
    dtype = grads[0].dtype if grads else torch.float32
    flags = [0.0 if p.grad is None else 1.0 for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]
                     + [torch.tensor(flags + list(extra), dtype=torch.float64).to(dtype=dtype, device=device)])
    dist.all_reduce(flat)
    at = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[at:at + n].view_as(p).clone()
        at += n
    tail = flat[at:].double().tolist()
    for p, used in zip(params, tail[:len(params)], strict=True):
        if used == 0:
            p.grad = None
    return tail[len(params):]


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object): decisions stay in step."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * size()
    dist.all_gather_object(out, value)
    return out


def assert_in_step(params: Iterable[Tensor], what: str = "parameters") -> None:
    """Debug check (THAW_DIST_DEBUG=1 calls it after training): every rank holds the same
    parameters, byte for byte; otherwise the job fails naming the ranks that differ."""
    if not active():
        return
    digest = 0
    for p in params:
        digest = zlib.crc32(p.detach().cpu().contiguous().numpy().tobytes(), digest)
    digests = gather(digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"ranks hold different {what} after training: crc32 per rank {digests}")


def debug() -> bool:
    return os.environ.get("THAW_DIST_DEBUG", "") not in ("", "0")


def deal(costs: Sequence[float]) -> list[int]:
    """The jobs this rank runs (their indices, in order): the longest first, each to the rank
    with the least work so far; every rank computes the same dealing. All of them in one
    process."""
    if not active():
        return list(range(len(costs)))
    load = [0.0] * size()
    mine = []
    for job in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        least = min(range(size()), key=lambda r: (load[r], r))
        load[least] += costs[job]
        if least == rank():
            mine.append(job)
    return sorted(mine)
