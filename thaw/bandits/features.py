"""Context features for the linear bandits: small, JSON-describable encodings of side features.

``TableEncoder`` turns a user or item feature table into numbers: one-hot for categories (gender,
occupation), age bands (one-hot), multi-hot for tuples (genres), min-max scaling for numbers
(year). Columns with more distinct text values than ``max_categories`` (titles, zip codes) are
left out. A *feature map* turns a request (``Context``) and candidate items into one row per
candidate; it is what LinUCB and linear Thompson sampling read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from thaw.data.features import AGE_BANDS as PROFILE_AGE_BANDS
from thaw.errors import ThawError
from thaw.models.base import Context

# The band edges thaw uses everywhere (MovieLens-1M's groups), for any column named "age".
AGE_BANDS = tuple(float(low) for low, _, _ in PROFILE_AGE_BANDS[1:])


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_multi(value: Any) -> bool:
    return isinstance(value, (list, tuple, set, frozenset, np.ndarray))


class TableEncoder:
    """Encodes rows of a feature table; the whole encoding is a JSON-able ``spec``."""

    def __init__(self, spec: Sequence[Mapping[str, Any]], bias: bool = True) -> None:
        self.spec = [dict(s) for s in spec]
        self.bias = bias
        self._index: list[dict[str, int]] = []
        self.names: list[str] = ["bias"] if bias else []
        for s in self.spec:
            if s["kind"] in ("onehot", "multihot"):
                self._index.append({str(c): i for i, c in enumerate(s["values"])})
                self.names += [f"{s['column']}={c}" for c in s["values"]]
            elif s["kind"] == "bands":
                self._index.append({})
                edges = s["edges"]
                inner = [f"{a:g}-{b:g}" for a, b in zip(edges, edges[1:], strict=False)]
                labels = [f"<{edges[0]:g}", *inner, f">={edges[-1]:g}"]
                self.names += [f"{s['column']}:{lab}" for lab in labels]
            elif s["kind"] == "scaled":
                self._index.append({})
                self.names.append(s["column"])
            else:
                raise ThawError(f"unknown feature kind '{s['kind']}'")

    @property
    def dim(self) -> int:
        return len(self.names)

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Sequence[str] | None = None, *, max_categories: int = 32,
            bands: Mapping[str, Sequence[float]] | None = None, bias: bool = True) -> TableEncoder:
        """Choose an encoding per column from the values in ``frame`` (deterministic)."""
        bands = {"age": AGE_BANDS, **(bands or {})}
        spec: list[dict[str, Any]] = []
        for col in (list(frame.columns) if columns is None else list(columns)):
            if col not in frame.columns:
                raise ThawError(f"feature column '{col}' not in the table (has: {', '.join(map(str, frame.columns))})")
            values = [v for v in frame[col].tolist() if not _missing(v)]
            if not values:
                continue
            if col in bands and all(isinstance(v, (int, float, np.number)) for v in values):
                spec.append({"column": col, "kind": "bands", "edges": [float(e) for e in bands[col]]})
            elif any(_is_multi(v) for v in values):
                counts = Counter(str(x) for v in values if _is_multi(v) for x in v)
                vocab = sorted(counts, key=lambda k: (-counts[k], k))[:max_categories]
                spec.append({"column": col, "kind": "multihot", "values": sorted(vocab)})
            elif all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values):
                arr = np.asarray(values, dtype=np.float64)
                lo, hi = float(arr.min()), float(arr.max())
                spec.append({"column": col, "kind": "scaled", "low": lo, "high": hi})
            else:
                counts = Counter(str(v) for v in values)
                if len(counts) > max_categories:
                    continue  # free text or an id-like column: left out on purpose
                spec.append({"column": col, "kind": "onehot", "values": sorted(counts)})
        return cls(spec, bias=bias)

    def encode(self, row: Mapping[str, Any]) -> np.ndarray:
        """One row (a profile dict or a Series) as a float64 vector; unknown values encode as zeros."""
        out = np.zeros(self.dim)
        pos = 0
        if self.bias:
            out[0] = 1.0
            pos = 1
        for s, index in zip(self.spec, self._index, strict=False):
            value = row.get(s["column"]) if hasattr(row, "get") else None
            kind = s["kind"]
            if kind == "onehot":
                if not _missing(value):
                    j = index.get(str(value))
                    if j is not None:
                        out[pos + j] = 1.0
                pos += len(index)
            elif kind == "multihot":
                if value is not None and not _missing(value):
                    for x in (value if _is_multi(value) else str(value).split("|")):
                        j = index.get(str(x))
                        if j is not None:
                            out[pos + j] = 1.0
                pos += len(index)
            elif kind == "bands":
                edges = s["edges"]
                if not _missing(value):
                    out[pos + int(np.searchsorted(edges, float(value), side="right"))] = 1.0
                pos += len(edges) + 1
            else:  # scaled
                if not _missing(value):
                    span = s["high"] - s["low"]
                    out[pos] = (float(value) - s["low"]) / span if span > 0 else 0.0
                pos += 1
        return out

    def encode_frame(self, frame: pd.DataFrame) -> np.ndarray:
        """Every row of ``frame``, in its order, as an (n, dim) matrix."""
        if len(frame) == 0:
            return np.zeros((0, self.dim))
        return np.stack([self.encode(row) for _, row in frame.iterrows()])

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "bias": self.bias}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableEncoder:
        return cls(data["spec"], bias=bool(data["bias"]))


# --- feature maps: (context, candidates) -> one row per candidate ---------------------------

_FEATURE_MAPS: dict[str, type[FeatureMap]] = {}


class FeatureMap:
    """Turns a request and its candidates into an (n_candidates, dim) matrix.

    ``per_item`` is False when every candidate gets the same row (features of the user only):
    disjoint linear bandits then take a fast path.
    """

    kind: ClassVar[str] = ""
    per_item: ClassVar[bool] = False
    dim: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _FEATURE_MAPS[cls.kind] = cls

    def context_vector(self, ctx: Context) -> np.ndarray:
        """The user's row (only for maps with ``per_item`` False)."""
        raise NotImplementedError

    def __call__(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        x = self.context_vector(ctx)
        return np.broadcast_to(x, (len(items), self.dim))

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> FeatureMap:
        raise NotImplementedError


def feature_map_from_state(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> FeatureMap:
    kind = meta.get("kind")
    if kind not in _FEATURE_MAPS:
        raise ThawError(f"unknown feature map '{kind}' in saved state")
    return _FEATURE_MAPS[kind].from_state(arrays, meta)


class VectorFeatures(FeatureMap):
    """Reads a ready-made vector from ``ctx.profile[key]`` (synthetic bandits, precomputed contexts)."""

    kind = "vector"

    def __init__(self, dim: int, key: str = "x") -> None:
        self.dim, self.key = int(dim), key

    def context_vector(self, ctx: Context) -> np.ndarray:
        if self.key not in ctx.profile:
            raise ThawError(f"context has no profile['{self.key}'] feature vector")
        x = np.asarray(ctx.profile[self.key], dtype=np.float64).reshape(-1)
        if x.shape[0] != self.dim:
            raise ThawError(f"profile['{self.key}'] has {x.shape[0]} values, expected {self.dim}")
        return x

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {"kind": self.kind, "dim": self.dim, "key": self.key}

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> VectorFeatures:
        return cls(int(meta["dim"]), meta["key"])


class ProfileFeatures(FeatureMap):
    """The user's side features (``ctx.profile``) encoded by a ``TableEncoder``."""

    kind = "profile"

    def __init__(self, encoder: TableEncoder) -> None:
        self.encoder = encoder
        self.dim = encoder.dim

    def context_vector(self, ctx: Context) -> np.ndarray:
        return self.encoder.encode(ctx.profile)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {"kind": self.kind, "encoder": self.encoder.to_json()}

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> ProfileFeatures:
        return cls(TableEncoder.from_json(meta["encoder"]))


class JoinedFeatures(FeatureMap):
    """User features joined with item features (content or embeddings from a fitted model).

    ``how="concat"`` gives [user, item]; ``how="outer"`` gives the flattened outer product
    user ⊗ item, so one shared linear model learns a bilinear user-item affinity. Item rows are
    looked up by internal item id; items beyond the table get zeros (plus the user part).
    """

    kind = "joined"
    per_item = True

    def __init__(self, user: FeatureMap, item_table: np.ndarray, how: str = "outer") -> None:
        if how not in ("outer", "concat"):
            raise ThawError(f"unknown join '{how}' (use 'outer' or 'concat')")
        if user.per_item:
            raise ThawError("the user part of JoinedFeatures must not depend on the item")
        self.user, self.how = user, how
        self.item_table = np.ascontiguousarray(item_table, dtype=np.float64)
        k = self.item_table.shape[1]
        self.dim = user.dim * k if how == "outer" else user.dim + k

    def item_rows(self, items: np.ndarray) -> np.ndarray:
        items = np.asarray(items, dtype=np.int64)
        rows = np.zeros((len(items), self.item_table.shape[1]))
        ok = (items >= 0) & (items < len(self.item_table))
        rows[ok] = self.item_table[items[ok]]
        return rows

    def __call__(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        u = self.user.context_vector(ctx)
        v = self.item_rows(items)
        if self.how == "outer":
            return (v[:, None, :] * u[None, :, None]).reshape(len(v), -1)
        return np.concatenate([np.broadcast_to(u, (len(v), len(u))), v], axis=1)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = self.user.state()
        return ({"item_table": self.item_table, **{f"user.{k}": a for k, a in arrays.items()}},
                {"kind": self.kind, "how": self.how, "user": meta})

    @classmethod
    def from_state(cls, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> JoinedFeatures:
        user_arrays = {k[5:]: a for k, a in arrays.items() if k.startswith("user.")}
        return cls(feature_map_from_state(user_arrays, meta["user"]), arrays["item_table"], meta["how"])


def item_content_matrix(item_features: pd.DataFrame, *, max_categories: int = 32) -> np.ndarray:
    """Items' content features (multi-hot genres, scaled year, one-hot small categories) by id."""
    enc = TableEncoder.fit(item_features, max_categories=max_categories, bias=False)
    return enc.encode_frame(item_features)


def cosine_neighbours(target: np.ndarray, table: np.ndarray, candidates: np.ndarray,
                      k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``table`` among ``candidates`` most cosine-similar to ``target``.

    Returns (items, weights) with weights proportional to the positive similarities and summing
    to one; empty when no candidate is positively similar.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    candidates = candidates[(candidates >= 0) & (candidates < len(table))]
    if len(candidates) == 0:
        return np.empty(0, dtype=np.int64), np.empty(0)
    rows = table[candidates]
    denom = np.linalg.norm(rows, axis=1) * (np.linalg.norm(target) + 1e-12) + 1e-12
    sims = rows @ target / denom
    order = np.lexsort((candidates, -sims))[:k]
    items, sims = candidates[order], sims[order]
    keep = sims > 0
    items, sims = items[keep], sims[keep]
    if len(items) == 0:
        return items, sims
    return items, sims / sims.sum()
