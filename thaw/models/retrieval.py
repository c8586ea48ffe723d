"""Top-N over the whole catalogue for two-tower models (thaw/models/two_tower.py): an exact
index (one matrix product) and, for large catalogues, an approximate one through faiss
(extra ``retrieval``: ``pip install 'thaw[retrieval]'``).

Both take the item vectors a two-tower model exports (``item_embeddings``) and answer a batch
of query vectors (``user_embeddings``) with each query's best ``n`` items by inner product,
best first; ties go to the lower item index, so results are reproducible.
"""

from __future__ import annotations

import numpy as np

from thaw.errors import ThawError


class ExactIndex:
    """Every item scored: ``queries @ items.T``, then a partial sort."""

    def __init__(self, vectors: np.ndarray, chunk: int = 1024) -> None:
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.chunk = chunk

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores), each (B, n): the ``n`` best items of every query, best first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n = min(n, len(self.vectors))
        ids = np.empty((len(queries), n), dtype=np.int64)
        scores = np.empty((len(queries), n), dtype=np.float32)
        for start in range(0, len(queries), self.chunk):
            block = queries[start:start + self.chunk] @ self.vectors.T
            top = np.argpartition(-block, n - 1, axis=1)[:, :n] if n < block.shape[1] else \
                np.tile(np.arange(block.shape[1]), (len(block), 1))
            values = np.take_along_axis(block, top, 1)
            order = np.lexsort((top, -values), axis=1)
            ids[start:start + len(block)] = np.take_along_axis(top, order, 1)
            scores[start:start + len(block)] = np.take_along_axis(values, order, 1)
        return ids, scores


class FaissIndex:
    """Approximate inner-product search: faiss's inverted file over ``n_lists`` k-means cells,
    ``n_probe`` of them visited per query (more: slower and closer to exact)."""

    def __init__(self, vectors: np.ndarray, n_lists: int | None = None, n_probe: int = 32, seed: int = 0) -> None:
        try:
            import faiss
        except ImportError:
            raise ThawError("approximate retrieval needs faiss: pip install 'thaw[retrieval]'") from None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        # faiss's k-means wants about 39 points per cell; 4 sqrt(n) cells is its usual advice
        n_lists = n_lists or max(1, min(int(4 * np.sqrt(len(vectors))), len(vectors) // 39))
        n_lists = min(n_lists, len(vectors))
        quantizer = faiss.IndexFlatIP(vectors.shape[1])
        self.index = faiss.IndexIVFFlat(quantizer, vectors.shape[1], n_lists, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        self.index.train(vectors)
        self.index.add(vectors)
        self.index.nprobe = min(n_probe, n_lists)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32), n)
        return ids.astype(np.int64), scores


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-n (``truth``) that ``found`` returned."""
    return float(np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)]))
