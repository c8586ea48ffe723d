"""Cross-domain data: two domains that share users, and the split that makes some of them cold.

A ``CrossDomainDataset`` holds a source and a target ``Dataset`` over one user id space (user
u in one is user u in the other, matched by the users' own ids), each with its own items. The
split follows PTUPCDR's protocol with a validation set it lacks: a fraction beta of the
overlap users (users with interactions in both domains) is cold in the target (every target
interaction held out, their source kept), a further set of overlap users is held out the same
way for model selection, and nothing of either reaches ``fit`` in the target.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thaw.data.schema import Dataset, Interactions
from thaw.data.splits import Split, by_user, chronological_order, items_by_user, sample_negatives
from thaw.errors import DataError, ThawError, option

# Built-in pairs of MovieLens genre domains (source genres, target genres). A movie belongs to
# the side whose genres it carries; a movie with genres of both sides is dropped, so no item
# is in both domains.
GENRE_PAIRS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "drama-comedy": (("Drama",), ("Comedy",)),
    "action-drama": (("Action", "Adventure", "Sci-Fi", "Thriller"), ("Drama", "Romance")),
}
BASES = ("ml-1m", "ml-100k")
BUILT_IN = tuple(f"{base}:{pair}" for base in BASES for pair in GENRE_PAIRS)


@dataclass(frozen=True)
class CrossDomainDataset:
    """A source and a target domain over the same users (``source.user_ids`` equals
    ``target.user_ids``); the items of the two are separate catalogues."""

    name: str
    source: Dataset
    target: Dataset

    def __post_init__(self) -> None:
        if not np.array_equal(self.source.user_ids.astype(str), self.target.user_ids.astype(str)):
            raise ValueError("the two domains of a CrossDomainDataset must share one user id space")

    @property
    def overlap(self) -> np.ndarray:
        """Users with interactions in both domains (the ones transfer can be trained on)."""
        return np.intersect1d(np.unique(self.source.interactions.user),
                              np.unique(self.target.interactions.user))

    def summary(self) -> str:
        return (f"{self.name}: source {len(self.source.interactions)} interactions on "
                f"{self.source.n_items} items, target {len(self.target.interactions)} on "
                f"{self.target.n_items} items, {len(self.overlap)} users in both")


def align(source: Dataset, target: Dataset, name: str) -> CrossDomainDataset:
    """Two data sets on one user id space: users are matched by their own ids, and a user of
    only one domain simply has no interactions in the other."""
    ids = pd.Index(pd.unique(np.concatenate([target.user_ids.astype(str),
                                             source.user_ids.astype(str)])))
    features = target.user_features.copy()
    features.index = target.user_ids.astype(str)
    extra = source.user_features.copy()
    extra.index = source.user_ids.astype(str)
    features = features.combine_first(extra) if len(extra.columns) else features
    features = features.reindex(ids).reset_index(drop=True)

    def onto(data: Dataset) -> Dataset:
        remap = ids.get_indexer(data.user_ids.astype(str))
        inter = replace(data.interactions, user=remap[data.interactions.user])
        return Dataset(data.name, inter, ids.to_numpy(dtype=object), data.item_ids, features,
                       data.item_features, data.rating_scale, data.source)

    return CrossDomainDataset(name, onto(source), onto(target))


def genre_domains(data: Dataset, source_genres: tuple[str, ...], target_genres: tuple[str, ...],
                  name: str | None = None) -> CrossDomainDataset:
    """Split one data set into two domains by item genre (items with genres of both sides are
    dropped); both keep every user, so the overlap is whoever rated on both sides."""
    if "genres" not in data.item_features.columns:
        raise DataError(f"data set '{data.name}' has no item genres to split domains by")
    genres = data.item_features["genres"]
    side_s = np.array([bool(set(g or ()) & set(source_genres)) for g in genres])
    side_t = np.array([bool(set(g or ()) & set(target_genres)) for g in genres])

    def part(keep: np.ndarray, label: str) -> Dataset:
        items = np.flatnonzero(keep)
        if len(items) == 0:
            raise DataError(f"no item of '{data.name}' has only the genres {', '.join(label)}")
        remap = np.full(data.n_items, -1)
        remap[items] = np.arange(len(items))
        rows = keep[data.interactions.item]
        inter = data.interactions.take(rows)
        inter = replace(inter, item=remap[inter.item])
        return Dataset(f"{data.name}:{'+'.join(label)}", inter, data.user_ids, data.item_ids[items],
                       data.user_features, data.item_features.iloc[items].reset_index(drop=True),
                       data.rating_scale, data.source)

    source = part(side_s & ~side_t, source_genres)
    target = part(side_t & ~side_s, target_genres)
    return CrossDomainDataset(name or f"{data.name}:{'+'.join(source_genres)}->{'+'.join(target_genres)}",
                              source, target)


def load_cross_domain(name: str, **loader_options: Any) -> CrossDomainDataset:
    """A built-in pair by name (``ml-1m:drama-comedy``, ...; see ``BUILT_IN``)."""
    from thaw.data.loaders import load_dataset

    base, _, pair = name.partition(":")
    if base not in BASES or pair not in GENRE_PAIRS:
        raise ThawError(f"unknown cross-domain data set '{name}'; built in: {', '.join(BUILT_IN)} "
                        "(or give two files with a shared user column: --source FILE --target FILE)")
    source_genres, target_genres = GENRE_PAIRS[pair]
    return genre_domains(load_dataset(base, **loader_options), source_genres, target_genres, name)


def from_files(source: str | Path, target: str | Path, *, columns: dict[str, str] | None = None,
               name: str | None = None) -> CrossDomainDataset:
    """Your own pair: two interaction files (CSV, TSV, Parquet, or RecBole atomic ``.inter``)
    whose user columns name the same people."""
    from thaw.data.loaders import load_recbole_atomic, load_table

    def read(path: str | Path) -> Dataset:
        path = Path(path)
        return load_recbole_atomic(path) if path.suffix == ".inter" else load_table(path, columns)

    s, t = read(source), read(target)
    pair = align(s, t, name or f"{s.name}->{t.name}")
    if len(pair.overlap) == 0:
        raise DataError(f"'{source}' and '{target}' share no user: transfer needs users in both")
    return pair


def permuted_source(pair: CrossDomainDataset, seed: int = 0) -> CrossDomainDataset:
    """The control pair whose source says nothing about the target: every source history is
    handed to another user (a seeded permutation among the users who have one). Transfer that
    beats the target-only model here is an artefact of the evaluation, not transfer."""
    inter = pair.source.interactions
    users = np.unique(inter.user)
    perm = np.arange(pair.source.n_users)
    perm[users] = np.random.default_rng(seed).permutation(users)
    source = pair.source.with_interactions(replace(inter, user=perm[inter.user]),
                                           name=f"{pair.source.name}:permuted")
    return CrossDomainDataset(f"{pair.name} (source permuted)", source, pair.target)


def cross_domain_split(pair: CrossDomainDataset, beta: float = 0.2, *, val_frac: float = 0.1,
                       seed: int = 0, n_negatives: int = 100) -> Split:
    """PTUPCDR's split with a validation set: ``beta`` of the overlap users are test users cold
    in the target, ``val_frac`` of them (drawn apart) validation users held out the same way
    (beta = 0: no test users, what ``thaw fit`` fits a served model with).

    The split's ``train`` is the target's remaining interactions with the whole source domain
    attached (``train.source_domain``: cold users' source histories stay, as in the protocol);
    each held-out user's source history rides on their episodes as ``Context.source``.
    """
    if not 0 <= beta < 1:
        raise ThawError(f"{option('beta')}{beta:g}: the cold fraction of overlap users must be "
                        "above 0 and below 1")
    if not 0 <= val_frac < 1 or beta + val_frac >= 1:
        raise ThawError(f"{option('val_frac')}{val_frac:g} with {option('beta')}{beta:g} leaves no "
                        "overlap user to train the transfer on: the two must sum to less than 1")
    overlap = pair.overlap
    rng = np.random.default_rng(seed)
    order = rng.permutation(overlap)
    n_test = int(round(beta * len(order)))
    n_val = int(round(val_frac * len(order)))
    if (beta > 0 and n_test == 0) or len(order) - n_test - n_val < 1:
        raise DataError(f"{pair.name}: {len(order)} overlap users are too few for "
                        f"beta={beta:g} and val_frac={val_frac:g}")
    role = np.zeros(pair.target.n_users, dtype=np.int8)
    role[order[:n_test]] = 2
    role[order[n_test:n_test + n_val]] = 1
    target = pair.target.interactions
    target = target.take(chronological_order(target, seed))
    u_role = role[target.user]
    parts = {r: by_user(target.take(u_role == r)) for r in (1, 2)}
    negatives: dict[int, np.ndarray] = {}
    for r in (1, 2):
        negatives |= sample_negatives(list(parts[r]), np.arange(pair.target.n_items), target, rng,
                                      n_negatives)
    source = pair.source.interactions
    source = source.take(chronological_order(source, seed))
    held = np.flatnonzero(role > 0)
    src_rows = by_user(source.take(role[source.user] > 0))
    sources = {int(u): replace(src_rows[u], user=np.full(len(src_rows[u]), -1))
               for u in held if u in src_rows}
    train = replace(pair.target.with_interactions(target.take(u_role == 0),
                                                  name=f"{pair.target.name}:train"),
                    source_domain=pair.source)
    return Split(f"cross-domain beta={beta:g}", train, parts[1], parts[2], negatives, seed=seed,
                 seen=items_by_user(target, [*parts[1], *parts[2]]), sources=sources)


def held_out_target_rows(split: Split) -> Interactions:
    """Every target interaction of the split's validation and test users (what fit must never
    see); for tests and audits."""
    rows = [seq for part in (split.val, split.test) for seq in part.values()]
    if not rows:
        return Interactions.empty()
    return Interactions(*(np.concatenate([getattr(r, c) for r in rows]) for c in
                          ("user", "item", "rating", "ts")))
