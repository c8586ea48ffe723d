"""Compute settings shared by the models."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator

import torch
from threadpoolctl import ThreadpoolController

from thaw.errors import ThawError


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS thread pools, found once: finding them reads the process's memory
    map, which took longer (about 5 ms) than a served SASRec request's whole forward pass."""
    return ThreadpoolController()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch and the BLAS on one thread inside the block, then restore the settings.

    thaw's networks and bandit updates are small: each operation takes microseconds, so handing
    work between threads costs more than it saves, and on a busy 2-core machine a second thread
    spinning for a core makes training many times slower. Works as a decorator too
    (``@one_thread()``).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas().limit(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)


def training_device() -> torch.device:
    """Where torch models train: THAW_DEVICE (``thaw fit --device``), CPU by default.

    Only training moves: fitted weights come back to the CPU, so a model trained on a GPU is
    saved, loaded and served like any other. Under torchrun every rank takes the GPU of its
    LOCAL_RANK.
    """
    name = os.environ.get("THAW_DEVICE", "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ThawError(f"device '{name}' asked for, but torch sees no CUDA GPU here")
        if name == "cuda" and "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        return torch.device(name)
    raise ThawError(f"device must be cpu, cuda or cuda:N, not '{name}'")


@contextlib.contextmanager
def trained_on(module: torch.nn.Module) -> Iterator[torch.device]:
    """Move ``module`` to the training device for the block and back to the CPU after it (an
    epoch's steps: validation between epochs scores on the CPU, as serving does)."""
    device = training_device()
    if device.type == "cpu":
        yield device
        return
    module.to(device)
    try:
        yield device
    finally:
        module.to("cpu")
