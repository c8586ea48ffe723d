"""Cross-domain data: two domains that share users, and the split that makes some of them cold.

A ``CrossDomainDataset`` holds a source and a target ``Dataset`` over one user id space (user
u in one is user u in the other, matched by the users' own ids), each with its own items. The
split follows PTUPCDR's protocol with a validation set it lacks: a fraction beta of the
overlap users (users with interactions in both domains) is cold in the target (every target
interaction held out, their source kept), a further set of overlap users is held out the same
way for model selection, and nothing of either reaches ``fit`` in the target.
"""

from __future__ import annotations

from collections.abc import Mapping
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


ROLES = ("train", "val", "test")
"""A user's role in a cross-domain split (training, validation for model selection, test); the
split's role code of a user is the role's position here."""


def read_roles(path: str | Path) -> pd.DataFrame:
    """A roles file: CSV with a header line ``user,role`` and one line per user (the user's own
    id, as in the interaction files; the role one of ``ROLES``). Checked against a pair by
    ``cross_domain_split``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such roles file", file=str(path))
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"cannot be read as a CSV file of user,role lines ({e})", file=str(path)) from None
    missing = [c for c in ("user", "role") if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(f"a roles file needs the header line 'user,role' (columns found: {found})",
                        file=str(path))
    return frame[["user", "role"]]


def _given_roles(pair: CrossDomainDataset, roles: Any) -> np.ndarray:
    """Each user's role code from roles given by the user's own id (a mapping, a Series, a
    DataFrame with columns user and role, or a roles file): errors name the user, and the
    line when they come from a file."""
    file = str(roles) if isinstance(roles, str | Path) else None
    if file is not None:
        roles = read_roles(roles)
    if isinstance(roles, pd.DataFrame):
        pairs = list(zip(roles["user"], roles["role"], strict=True))
    elif isinstance(roles, Mapping | pd.Series):
        pairs = list(roles.items())
    else:
        raise ThawError("roles: give a mapping of user id to role, a DataFrame with columns user "
                        f"and role, or a CSV file of user,role lines, not {type(roles).__name__}")
    names = [str(name).strip() for name, _ in pairs]
    where = pd.Index(pair.target.user_ids.astype(str)).get_indexer(names)
    in_both = np.zeros(pair.target.n_users, dtype=bool)
    in_both[pair.overlap] = True
    code = np.full(pair.target.n_users, -1, dtype=np.int8)
    for row, (name, user, (_, role)) in enumerate(zip(names, where, pairs, strict=True)):
        role = str(role).strip().lower()
        problem = None
        if role not in ROLES:
            problem = f"user '{name}' has the role '{role}': a role is one of {', '.join(ROLES)}"
        elif user < 0:
            problem = f"user '{name}' is in neither domain of {pair.name}"
        elif code[user] >= 0 and ROLES[code[user]] != role:
            problem = f"user '{name}' is given two roles, {ROLES[code[user]]} and {role}"
        elif role != "train" and not in_both[user]:
            problem = (f"user '{name}' is given the role {role} but has interactions in only one "
                       "domain: a held-out user needs a source history and target interactions")
        if problem is not None:
            raise DataError(problem, file=file, line=row + 2 if file is not None else None)
        code[user] = ROLES.index(role)
    return np.maximum(code, 0)  # a user not named trains


def _drawn_roles(pair: CrossDomainDataset, beta: float, val_frac: float,
                 order: np.ndarray) -> np.ndarray:
    """Role codes drawn as PTUPCDR does: the first ``beta`` of the shuffled overlap users are
    test users, the next ``val_frac`` validation users."""
    given_beta = option("beta", f"{beta:g}", f"{beta:g}")
    if not 0 <= beta < 1:
        raise ThawError(f"{given_beta}: the cold fraction of overlap users must be at least 0 and "
                        "below 1")
    if not 0 <= val_frac < 1 or beta + val_frac >= 1:
        raise ThawError(f"{option('val_frac', f'{val_frac:g}', f'{val_frac:g}')} with {given_beta} "
                        "leaves no overlap user to train the transfer on: the two must sum to less "
                        "than 1")
    n_test = int(round(beta * len(order)))
    n_val = int(round(val_frac * len(order)))
    if (beta > 0 and n_test == 0) or len(order) - n_test - n_val < 1:
        raise DataError(f"{pair.name}: {len(order)} overlap users are too few for "
                        f"beta={beta:g} and val_frac={val_frac:g}")
    code = np.zeros(pair.target.n_users, dtype=np.int8)
    code[order[:n_test]] = ROLES.index("test")
    code[order[n_test:n_test + n_val]] = ROLES.index("val")
    return code


def cross_domain_split(pair: CrossDomainDataset, beta: float | None = None, *,
                       val_frac: float | None = None, seed: int = 0, n_negatives: int = 100,
                       roles: Any = None) -> Split:
    """PTUPCDR's split with a validation set: ``beta`` (default 0.2) of the overlap users are
    test users cold in the target, ``val_frac`` (default 0.1) of them (drawn apart) validation
    users held out the same way (beta = 0: no test users, what ``thaw fit`` fits a served model
    with).

    ``roles`` gives the roles instead of drawing them: each user's own id (as in the data) to
    "train", "val" or "test", as a mapping, a pandas Series, or a CSV file of ``user,role``
    lines (``read_roles``); an overlap user it does not name trains, and validation and test
    users must be overlap users. The negatives are drawn as for the drawn split of the same
    seed, so handing back the roles a split drew gives that split again.

    The split's ``train`` is the target's remaining interactions with the whole source domain
    attached (``train.source_domain``: cold users' source histories stay, as in the protocol);
    each held-out user's source history rides on their episodes as ``Context.source``.
    """
    overlap = pair.overlap
    rng = np.random.default_rng(seed)
    order = rng.permutation(overlap)  # drawn either way: the negatives come from the same stream
    if roles is None:
        beta = 0.2 if beta is None else beta
        val_frac = 0.1 if val_frac is None else val_frac
        role = _drawn_roles(pair, beta, val_frac, order)
        kind = f"cross-domain beta={beta:g}"
    else:
        if beta is not None or val_frac is not None:
            raise ThawError(f"give roles ({option('roles', 'FILE', 'ROLES')}) or the fractions "
                            "that draw them (beta, val_frac), not both")
        role = _given_roles(pair, roles)
        if not (role[overlap] == 0).any():
            raise DataError(f"{pair.name}: the given roles leave no overlap user to train the "
                            "transfer on")
        kind = "cross-domain, given roles"
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
    return Split(kind, train, parts[1], parts[2], negatives, seed=seed,
                 seen=items_by_user(target, [*parts[1], *parts[2]]), sources=sources)


def held_out_target_rows(split: Split) -> Interactions:
    """Every target interaction of the split's validation and test users (what fit must never
    see); for tests and audits."""
    rows = [seq for part in (split.val, split.test) for seq in part.values()]
    if not rows:
        return Interactions.empty()
    return Interactions(*(np.concatenate([getattr(r, c) for r in rows]) for c in
                          ("user", "item", "rating", "ts")))
