"""Negative samplers: items a user never touched, drawn by rejection sampling.

``sample_unseen`` draws for one user against a mask of their items. ``sample_unseen_by``
draws for many owners at once (training windows, tasks) against sorted (owner, item) keys
made by ``pair_keys``, so no Python loop runs over owners.
"""

from __future__ import annotations

import numpy as np


def sample_unseen(n_items: int, seen: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n items (with replacement) outside ``seen``; rejection sampling, exact and cheap.
    Empty when every item is seen."""
    seen_mask = np.zeros(n_items, dtype=bool)
    seen_mask[np.asarray(seen, dtype=np.int64)] = True
    if seen_mask.all() or n == 0:
        return np.empty(0, dtype=np.int64)
    out = np.empty(0, dtype=np.int64)
    while len(out) < n:
        draw = rng.integers(0, n_items, 2 * n + 8)
        out = np.concatenate([out, draw[~seen_mask[draw]]])
    return out[:n]


def pair_keys(owners: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """The sorted distinct keys ``owner * n_items + item`` of (owner, item) pairs."""
    return np.unique(np.asarray(owners, dtype=np.int64) * np.int64(n_items)
                     + np.asarray(items, dtype=np.int64))


def sample_unseen_by(owners: np.ndarray, shape: tuple[int, ...], seen_keys: np.ndarray,
                     n_items: int, rng: np.random.Generator, *, pool: np.ndarray | None = None,
                     rounds: int = 50) -> np.ndarray:
    """Items of ``shape``, whose first axis runs over ``owners``, each drawn uniformly from
    ``pool`` (default: every item) and redrawn while its owner touched it (``seen_keys`` from
    ``pair_keys``). After ``rounds`` redraws a draw is kept as it is: an owner who touched
    nearly every item would otherwise never finish."""

    def draw(size: int | tuple[int, ...]) -> np.ndarray:
        if pool is None:
            return rng.integers(0, n_items, size)
        return pool[rng.integers(0, len(pool), size)]

    out = draw(shape)
    owner = np.broadcast_to(np.reshape(owners, (len(owners),) + (1,) * (len(shape) - 1)), out.shape)
    for _ in range(rounds):
        keys = owner * np.int64(n_items) + out
        where = np.searchsorted(seen_keys, keys).clip(max=len(seen_keys) - 1)
        bad = seen_keys[where] == keys
        if not bad.any():
            break
        out[bad] = draw(int(bad.sum()))
    return out
