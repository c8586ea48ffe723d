"""Content-based fallback: item kNN on TF-IDF of title, genres and year.

The always-on safety net of the overview paper: it needs no interactions for the item, so it
scores new items as well as old ones. A user is scored by similarity to their support items;
a rating by the similarity-weighted average of their support ratings.
"""

from __future__ import annotations

from typing import Self

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from thaw.data.features import item_documents
from thaw.data.schema import Dataset
from thaw.models.base import Context, Recommender, Validator, register
from thaw.models.baselines import shrunk_means


@register("content")
class ContentKNN(Recommender):
    """Score = summed cosine similarity to the support items.

    Items equally similar to the support (often: every item when the support is empty) are
    ordered by popularity among training users, with a weight far too small to override any
    similarity difference. Rating = (sum sim * rating + prior * item mean) / (sum sim + prior).
    """

    predicts_ratings = True

    def __init__(self, prior: float = 1.0, tiebreak: bool = True, shrinkage: float = 5.0) -> None:
        self.prior = prior
        self.tiebreak = tiebreak
        self.shrinkage = shrinkage

    def fit(self, data: Dataset, validate: Validator | None = None) -> Self:
        docs = item_documents(data)
        vectorizer = TfidfVectorizer(token_pattern=r"(?u)\b\w[\w']*\b", sublinear_tf=True,
                                     lowercase=True)
        if not any(d.strip() for d in docs):
            self.vectors = None
        else:
            self.vectors = vectorizer.fit_transform(docs).tocsr()  # rows are L2-normalised
        inter = data.interactions
        counts = np.bincount(inter.item, minlength=data.n_items).astype(np.float64)
        self.popularity = counts / max(counts.max(), 1.0) * 1e-9 if self.tiebreak else 0 * counts
        self.global_mean = float(inter.rating.mean()) if len(inter) else float(np.mean(data.rating_scale))
        self.item_means = shrunk_means(inter.item, inter.rating, data.n_items, self.global_mean,
                                       self.shrinkage)
        return self

    def similarity(self, items: np.ndarray, support: np.ndarray) -> np.ndarray:
        """Cosine similarity, shape (len(items), len(support)); zeros without content."""
        if self.vectors is None or len(support) == 0:
            return np.zeros((len(items), len(support)))
        return (self.vectors[items] @ self.vectors[support].T).toarray()

    def score(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        sims = self.similarity(items, ctx.history.item)
        return sims.sum(axis=1) + self.popularity[items]

    def predict(self, ctx: Context, items: np.ndarray) -> np.ndarray:
        sims = np.clip(self.similarity(items, ctx.history.item), 0.0, None)
        weighted = sims @ ctx.history.rating.astype(np.float64)
        return (weighted + self.prior * self.item_means[items]) / (sims.sum(axis=1) + self.prior)
