"""Compute settings shared by the models."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from threadpoolctl import ThreadpoolController


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
