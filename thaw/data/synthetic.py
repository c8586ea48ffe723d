"""Synthetic data sets with planted structure, for tests and demonstrations.

Users belong to hidden clusters; each cluster prefers a few genres. Profiles (gender, age)
hint at the cluster and item genres reveal it, so a method that reads features or support
interactions can recover what a cluster likes, and popularity alone cannot.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from thaw.data.schema import Dataset

GENRES = ("Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "Western")


def make_synthetic(n_users: int = 120, n_items: int = 80, n_clusters: int = 3,
                   per_user: tuple[int, int] = (15, 30), seed: int = 0) -> Dataset:
    """A small data set: cluster c likes genres 2c and 2c+1 (mod the genre count)."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, n_clusters, n_users)
    item_genre = rng.integers(0, len(GENRES), n_items)
    liked = np.zeros((n_clusters, n_items), dtype=bool)
    for c in range(n_clusters):
        liked[c] = np.isin(item_genre, [(2 * c) % len(GENRES), (2 * c + 1) % len(GENRES)])
    quality = rng.normal(0.0, 0.5, n_items)
    rows = []
    for u in range(n_users):
        affinity = 2.5 * liked[cluster[u]] + quality
        p = np.exp(affinity)
        p /= p.sum()
        count = int(rng.integers(per_user[0], per_user[1] + 1))
        items = rng.choice(n_items, size=min(count, n_items), replace=False, p=p)
        start = int(rng.integers(0, 10_000))
        # Whole-"second" timestamps with deliberate ties, as in MovieLens.
        ts = start + np.cumsum(rng.integers(0, 3, len(items)))
        for item, t in zip(items, ts, strict=True):
            mean = 3.0 + 1.5 * liked[cluster[u], item] + quality[item]
            rating = float(np.clip(np.rint(mean + rng.normal(0, 0.7)), 1, 5))
            rows.append((f"u{u}", f"i{item}", rating, int(t)))
    ratings = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    users = pd.DataFrame({
        "gender": np.where(cluster % 2 == 0, "F", "M"),
        "age": 20 + 12 * cluster + rng.integers(0, 6, n_users),
        "occupation": [f"job{c}" for c in cluster],
        "zip_prefix": ["00"] * n_users,
    }, index=[f"u{u}" for u in range(n_users)])
    items = pd.DataFrame({
        "title": [f"{GENRES[g]} story {i}" for i, g in enumerate(item_genre)],
        "year": 1980.0 + rng.integers(0, 30, n_items),
        "genres": [(GENRES[g],) for g in item_genre],
    }, index=[f"i{i}" for i in range(n_items)])
    data = Dataset.from_frames("synthetic", ratings, users, items, rating_scale=(1.0, 5.0))
    return data


def hidden_clusters(n_users: int = 120, n_clusters: int = 3, seed: int = 0) -> np.ndarray:
    """The planted cluster of each raw user id u0..u{n-1} (same draw as make_synthetic)."""
    return np.random.default_rng(seed).integers(0, n_clusters, n_users)


def make_preference_clusters(n_users: int = 300, n_items: int = 60, n_clusters: int = 2,
                             per_user: int = 20, noise: float = 0.3, seed: int = 0,
                             return_clusters: bool = False) -> Dataset | tuple[Dataset, np.ndarray]:
    """Users in hidden clusters whose ratings follow different functions of item genres.

    Profiles carry no hint of the cluster and items are drawn uniformly, so neither
    popularity nor features alone tell a user's taste: only their own few ratings do. A
    meta-learner must recover a cluster's preference from K examples; HML, with one
    initialisation per cluster, should do best. With ``return_clusters`` the hidden cluster of
    each user (by the data set's internal user id) comes back too, to check a model against.
    """
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)
    weights = rng.normal(0.0, 1.0, (n_clusters, n_genres))
    if n_clusters == 2:
        weights[1] = -weights[0]  # opposite tastes: the average user likes nothing in particular
    item_genres = np.zeros((n_items, n_genres))
    for i in range(n_items):
        item_genres[i, rng.choice(n_genres, size=rng.integers(1, 3), replace=False)] = 1.0
    cluster = rng.integers(0, n_clusters, n_users)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=per_user, replace=False)
        taste = item_genres[items] @ weights[cluster[u]] / np.sqrt(item_genres[items].sum(1))
        ratings = np.clip(np.rint(3.0 + 1.6 * np.tanh(taste) + rng.normal(0, noise, per_user)), 1, 5)
        for j, (item, rating) in enumerate(zip(items, ratings, strict=True)):
            rows.append((f"u{u}", f"i{item}", float(rating), j))
    ratings_frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    users = pd.DataFrame({"gender": ["F"] * n_users, "age": [30] * n_users},
                         index=[f"u{u}" for u in range(n_users)])
    items_frame = pd.DataFrame({
        "title": [f"item {i}" for i in range(n_items)],
        "year": [1990.0] * n_items,
        "genres": [tuple(GENRES[g] for g in np.flatnonzero(item_genres[i])) for i in range(n_items)],
    }, index=[f"i{i}" for i in range(n_items)])
    data = Dataset.from_frames("preference-clusters", ratings_frame, users, items_frame,
                               rating_scale=(1.0, 5.0))
    if not return_clusters:
        return data
    return data, cluster[[int(uid[1:]) for uid in data.user_ids]]


def make_step_walks(n_users: int = 600, n_items: int = 400, length: tuple[int, int] = (6, 10),
                    seed: int = 0) -> Dataset:
    """Users walk a line of items with a fixed stride: i, i+1, i+2, ... for even users and
    i, i+2, i+4, ... for odd ones, from a random start.

    The next item follows from the last one and the user's stride, which two consecutive
    items reveal. A transition model (MetaTL) can learn the two strides once for every item;
    a sequence model must learn each item's successors. With a catalogue much larger than a
    user's walk, the 100 sampled negatives rarely hold the other stride's candidate.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        stride = 1 + u % 2
        n = int(rng.integers(length[0], length[1] + 1))
        start = int(rng.integers(0, n_items - stride * n))
        rows += [(f"u{u}", f"i{start + stride * t}", 1.0, 1_000 * u + t) for t in range(n)]
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    return Dataset.from_frames("step-walks", frame, items=pd.DataFrame(index=[f"i{i}" for i in range(n_items)]))

