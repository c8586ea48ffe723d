"""A synthetic cross-domain pair with planted structure, for the transfer tests: it builds on
thaw/data's ``Dataset`` and makes a ``CrossDomainDataset``, so it lives with the transfer code
rather than in thaw/data (which imports nothing above itself)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from thaw.data.schema import Dataset
from thaw.transfer.data import CrossDomainDataset, align


def make_mapped_domains(n_users: int = 900, n_source: int = 150, n_target: int = 100,
                        per_user: tuple[int, int] = (30, 25), dim: int = 3, noise: float = 0.3,
                        seed: int = 0) -> CrossDomainDataset:
    """Two domains over the same users where each user's target taste is a user-specific
    linear map of their source taste: half the users keep their taste (map I), the other half
    flip all but the first dimension (map diag(1, -1, ...)), so one global map can only carry
    the first dimension. Which half a user is in shows in the source domain: every user rates
    six marker items, loving three and hating three, the halves the opposite way round."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 2, n_users)
    taste = rng.normal(size=(n_users, dim))
    flip = np.ones(dim)
    flip[1:] = -1.0
    target_taste = np.where(group[:, None] == 1, taste * flip, taste)
    item_s, item_t = rng.normal(size=(n_source, dim)), rng.normal(size=(n_target, dim))
    markers = np.arange(6)

    def ratings(tastes: np.ndarray, items: np.ndarray, count: int, offset: int) -> list[tuple]:
        rows = []
        for u in range(n_users):
            chosen = rng.choice(np.arange(offset, len(items)), size=count, replace=False)
            values = 3.0 + 1.2 * items[chosen] @ tastes[u] + rng.normal(0.0, noise, count)
            rows += [(u, i, v, t) for t, (i, v) in enumerate(zip(chosen, values, strict=True))]
        return rows

    source_rows = ratings(taste, item_s, per_user[0], len(markers))
    for u in range(n_users):
        loved = markers[:3] if group[u] == 0 else markers[3:]
        source_rows += [(u, int(i), 5.0 if i in loved else 1.0, count) for count, i in
                        enumerate(markers, start=per_user[0])]
    target_rows = ratings(target_taste, item_t, per_user[1], 0)

    def frame(rows: list[tuple], prefix: str) -> Dataset:
        df = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
        df["rating"] = np.clip(np.round(df["rating"]), 1, 5)
        df["user"] = "u" + df["user"].astype(str)
        df["item"] = prefix + df["item"].astype(str)
        return Dataset.from_frames(f"mapped-{prefix}", df, rating_scale=(1.0, 5.0))

    return align(frame(source_rows, "s"), frame(target_rows, "t"), "mapped-domains")
