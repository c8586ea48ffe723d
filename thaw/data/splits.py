"""Cold-start splits: held-out users and items never reach ``fit``.

A split keeps three things apart: ``train`` (the only data a model is fitted on), and for each
held-out validation or test user the ordered sequence of interactions that episodes are cut
from (support = first K, target = the K+1-th, query = the rest), plus 100 negatives sampled
once per user. Order within one timestamp is a seeded shuffle, never the item id: MovieLens
stores whole seconds, and ordering ties by id would hand models a free signal.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from thaw.data.io.columns import check_rating_scale, first_occurrences
from thaw.data.loaders import read_feature_table
from thaw.data.schema import Dataset, Interactions
from thaw.errors import DataError, ThawError, option

SPLIT_KINDS = ("new-user", "new-item", "both", "temporal", "warm")


@dataclass(frozen=True)
class Split:
    """Training data plus the held-out users' ordered sequences and their negatives."""

    kind: str
    train: Dataset
    val: dict[int, Interactions]
    test: dict[int, Interactions]
    negatives: dict[int, np.ndarray]
    held_items: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    users_known: bool = False
    """True when evaluation users are warm (new-item split): contexts then carry their id."""
    seed: int = 0
    item_strata: tuple[int, ...] = (0,)
    """Training interactions a held-out item may have (see ``make_split``)."""
    seen: dict[int, np.ndarray] = field(default_factory=dict)
    """Every item each validation and test user interacted with in the data the split was cut
    from, in any role (training rows of a warm user, rows a both-cold split drops): no
    negative, sampled or full-ranking, is ever one of them."""
    sources: dict[int, Interactions] = field(default_factory=dict)
    """Cross-domain splits: each validation and test user's history in the source domain
    (``train.source_domain``), which every one of their episodes carries as ``Context.source``."""

    def sequences(self, part: str) -> dict[int, Interactions]:
        if part not in ("val", "test"):
            raise ValueError("part must be 'val' or 'test'")
        return self.val if part == "val" else self.test

    def describe(self) -> str:
        return (f"{self.kind} split (seed {self.seed}): {len(self.train.interactions)} training "
                f"interactions, {len(self.val)} validation users, {len(self.test)} test users, "
                f"{len(self.held_items)} held-out items")


def chronological_order(inter: Interactions, seed: int) -> np.ndarray:
    """Row order by (user, ts) with ties inside one timestamp broken by a seeded shuffle; by
    (user, pos) instead when the interactions carry a fixed order (``Interactions.pos``)."""
    tiebreak = np.random.default_rng(seed).permutation(len(inter))
    return np.lexsort((tiebreak, inter.ts if inter.pos is None else inter.pos, inter.user))


def make_split(data: Dataset, kind: str = "new-user", *, test_frac: float = 0.2,
               val_frac: float = 0.1, seed: int = 0, n_negatives: int = 100,
               item_strata: tuple[int, ...] = (0,)) -> Split:
    """Split a data set for cold-start evaluation; ``kind`` is one of SPLIT_KINDS.

    ``item_strata`` (new-item and both): each held-out item draws one of these counts, and
    that many of its first interactions by training users go into training, as if the item
    had just arrived and been seen that often; results can then be read per item stratum
    the way they are read per user-side K. The default (0,) holds every item out entirely.
    """
    if kind not in SPLIT_KINDS:
        raise ThawError(f"unknown split kind '{kind}'; choose one of {', '.join(SPLIT_KINDS)}")
    for name, value in (("test_frac", test_frac), ("val_frac", val_frac)):
        if not 0 <= value < 1:
            raise ThawError(f"{option(name)}{value:g}: a fraction must be at least 0 and below 1")
    if test_frac + val_frac >= 1:
        raise ThawError(f"{option('test_frac')}{test_frac:g} and {option('val_frac')}{val_frac:g} leave no "
                        "training users: the two fractions must sum to less than 1")
    if test_frac == 0 and kind != "new-user":
        raise ThawError(f"{option('test_frac')}0 holds out no test users; only a new-user split may "
                        "(as `thaw fit` does, to train on every user but the validation users)")
    inter = data.interactions.take(chronological_order(data.interactions, seed))
    rng = np.random.default_rng(seed)
    all_items = np.arange(data.n_items)
    users = np.unique(inter.user)

    if kind == "temporal":
        return _temporal(data, inter, users, test_frac, val_frac, seed, n_negatives)
    if kind == "warm":
        return _warm(data, inter, users, test_frac, val_frac, seed, n_negatives)

    held_users = np.zeros(data.n_users, dtype=np.int8)  # 0 train, 1 val, 2 test
    held_items = np.zeros(data.n_items, dtype=np.int8)
    if kind in ("new-user", "both"):
        _assign(held_users, rng.permutation(users), test_frac, val_frac)
    if kind in ("new-item", "both"):
        _assign(held_items, rng.permutation(np.unique(inter.item)), test_frac, val_frac)

    u_role, i_role = held_users[inter.user], held_items[inter.item]
    item_support = _item_support(inter, u_role, held_items, item_strata, seed)
    train_mask = ((u_role == 0) & (i_role == 0)) | item_support
    parts: dict[int, dict[int, Interactions]] = {1: {}, 2: {}}
    if kind == "new-user":
        for role in (1, 2):
            parts[role] = by_user(inter.take(u_role == role))
    elif kind == "new-item":
        for role in (1, 2):
            parts[role] = by_user(inter.take((i_role == role) & ~item_support))
    else:  # both: held users on held items; their other interactions are dropped, never trained on
        for role in (1, 2):
            parts[role] = by_user(inter.take((u_role == role) & (i_role == role)))

    negatives: dict[int, np.ndarray] = {}
    for role in (1, 2):
        pool = all_items if kind == "new-user" else all_items[held_items == role]
        negatives |= sample_negatives(list(parts[role]), pool, inter, rng, n_negatives)
    train = data.with_interactions(inter.take(train_mask), name=f"{data.name}:train")
    return Split(kind, train, parts[1], parts[2], negatives,
                 np.flatnonzero(held_items > 0), users_known=(kind == "new-item"), seed=seed,
                 item_strata=tuple(sorted(set(item_strata) | {0})),
                 seen=items_by_user(inter, [*parts[1], *parts[2]]))


def _item_support(inter: Interactions, u_role: np.ndarray, held_items: np.ndarray,
                  strata: tuple[int, ...], seed: int) -> np.ndarray:
    """Rows that go into training as held-out items' first interactions (by training users
    only, so no evaluation user's data is trained on): each held item draws its count from
    ``strata`` with its own seeded generator, so the rest of the split is the same."""
    rows = np.zeros(len(inter), dtype=bool)
    if not any(strata):
        return rows
    held = np.flatnonzero(held_items > 0)
    wanted = np.zeros(len(held_items), dtype=np.int64)
    wanted[held] = np.random.default_rng([seed, 7]).choice(np.asarray(strata, dtype=np.int64), len(held))
    eligible = np.flatnonzero((held_items[inter.item] > 0) & (u_role == 0))
    # Chronological per item; rows are already in (user, ts, seeded tie) order, so a stable
    # sort on (item, ts) keeps ties in that seeded order.
    eligible = eligible[np.lexsort((inter.ts[eligible], inter.item[eligible]))]
    items = inter.item[eligible]
    starts = np.searchsorted(items, items, side="left")
    rank = np.arange(len(eligible)) - starts
    rows[eligible[rank < wanted[items]]] = True
    return rows


def item_stratum(counts: np.ndarray, strata: tuple[int, ...]) -> np.ndarray:
    """The largest stratum at most each count (items with 2 training interactions are read
    in stratum 1 of 0, 1, 3, 5, 10)."""
    strata_arr = np.sort(np.asarray(strata, dtype=np.int64))
    return strata_arr[np.searchsorted(strata_arr, counts, side="right") - 1]


def _assign(roles: np.ndarray, ids: np.ndarray, test_frac: float, val_frac: float) -> None:
    n_test = max(1, int(round(len(ids) * test_frac))) if test_frac > 0 else 0
    n_val = int(round(len(ids) * val_frac))
    roles[ids[:n_test]] = 2
    roles[ids[n_test:n_test + n_val]] = 1


def by_user(inter: Interactions) -> dict[int, Interactions]:
    """Per-user sequences, keeping the (already chronological) row order."""
    if len(inter) == 0:
        return {}
    bounds = np.flatnonzero(np.diff(inter.user)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(inter)]])
    return {int(inter.user[s]): inter.take(slice(s, e)) for s, e in zip(starts, ends, strict=True)}


def items_by_user(inter: Interactions, users: list[int]) -> dict[int, np.ndarray]:
    """The sorted distinct items each of ``users`` interacted with in ``inter``."""
    rows = np.flatnonzero(np.isin(inter.user, users))
    rows = rows[np.lexsort((inter.item[rows], inter.user[rows]))]
    found = by_user(inter.take(rows))
    return {int(u): np.unique(found[u].item) if u in found else np.empty(0, dtype=np.int64)
            for u in users}


def sample_negatives(users: list[int], pool: np.ndarray, inter: Interactions,
                     rng: np.random.Generator, n: int) -> dict[int, np.ndarray]:
    """For each user, n items from the pool they never interacted with (fewer if it is small).

    Users are drawn for in the order given, so the same seed gives the same negatives.
    """
    seen = by_user(inter.take(np.lexsort((inter.item, inter.user))))
    out = {}
    for user in users:
        candidates = np.setdiff1d(pool, seen[user].item if user in seen else [])
        take = min(n, len(candidates))
        out[user] = np.sort(rng.choice(candidates, size=take, replace=False)).astype(np.int64)
    return out


def _temporal(data: Dataset, inter: Interactions, users: np.ndarray, test_frac: float,
              val_frac: float, seed: int, n_negatives: int) -> Split:
    """Users whose first interaction falls after a cut are held out (MetaTL's setting).

    Training keeps only interactions before the validation cut, so nothing a model sees comes
    from the time the held-out users were active.
    """
    first = pd.Series(inter.ts).groupby(inter.user).min().reindex(users).to_numpy()
    tiebreak = np.random.default_rng(seed + 1).permutation(len(users))
    order = users[np.lexsort((tiebreak, first))]
    n_test = max(1, int(round(len(users) * test_frac)))
    n_val = int(round(len(users) * val_frac))
    test_users = order[len(order) - n_test:]
    val_users = order[len(order) - n_test - n_val:len(order) - n_test]
    train_users = order[:len(order) - n_test - n_val]
    cut = first[np.searchsorted(users, order[len(order) - n_test - n_val])]
    is_train_user = np.isin(inter.user, train_users)
    train = inter.take(is_train_user & (inter.ts < cut))
    rng = np.random.default_rng(seed)
    all_items = np.arange(data.n_items)
    parts = {}
    negatives: dict[int, np.ndarray] = {}
    for name, members in (("val", val_users), ("test", test_users)):
        parts[name] = by_user(inter.take(np.isin(inter.user, members)))
        negatives |= sample_negatives(list(parts[name]), all_items, inter, rng, n_negatives)
    return Split("temporal", data.with_interactions(train, name=f"{data.name}:train"),
                 parts["val"], parts["test"], negatives, seed=seed,
                 seen=items_by_user(inter, [*parts["val"], *parts["test"]]))


def _warm(data: Dataset, inter: Interactions, users: np.ndarray, test_frac: float,
          val_frac: float, seed: int, n_negatives: int) -> Split:
    """Existing users and items: a held-out user's earlier half stays in training.

    Their later half is the sequence episodes are cut from, so the model knows the user (by
    id and history) and every item, and is asked about the user's future.
    """
    rng = np.random.default_rng(seed)
    roles = np.zeros(data.n_users, dtype=np.int8)
    _assign(roles, rng.permutation(users), test_frac, val_frac)
    counts = np.bincount(inter.user, minlength=data.n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    position = np.arange(len(inter)) - starts[inter.user]  # rank within the user's sequence
    later = position >= (counts[inter.user] + 1) // 2
    held = (roles[inter.user] > 0) & later
    parts = {role: by_user(inter.take(held & (roles[inter.user] == role))) for role in (1, 2)}
    negatives: dict[int, np.ndarray] = {}
    for role in (1, 2):
        negatives |= sample_negatives(list(parts[role]), np.arange(data.n_items), inter, rng,
                                       n_negatives)
    train = data.with_interactions(inter.take(~held), name=f"{data.name}:train")
    return Split("warm", train, parts[1], parts[2], negatives, users_known=True, seed=seed,
                 seen=items_by_user(inter, [*parts[1], *parts[2]]))


# --- external splits ---------------------------------------------------------------------

def read_split_folder(folder: str | Path, data: Dataset | None = None, *, seed: int = 0,
                      n_negatives: int = 100) -> Split:
    """A split supplied by the user, used exactly as given.

    ``interactions.csv`` has columns user,item,rating,ts,role (role: train/val/test) and may
    have ``pos`` to fix each user's order, which every model that orders training histories
    then follows (``Interactions.pos``); ``negatives.csv`` (user,item) is optional and may name
    no item its user interacted with, nor one pair twice. When a data set is given, its id
    space and features are used and unknown ids are an error. ``users.csv`` (column user) and
    ``items.csv`` (column item) may carry the split's own side features, feature columns
    beside the id (see ``thaw.data.loaders.read_feature_table``); they take the place of the
    data set's. A split left with no user or no item features warns (MissingFeaturesWarning):
    the models that read them would silently fall back to popularity.
    """
    folder = Path(folder)
    path = folder / "interactions.csv"
    if not path.is_file():
        raise DataError("split folder has no interactions.csv", file=str(path))
    frame = _read_csv(path, ("user", "item", "rating", "ts", "role"))
    roles = frame["role"].astype(str).str.strip().str.lower()
    bad = ~roles.isin(["train", "val", "test"])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"role must be train, val or test, got '{frame['role'].iloc[row]}'",
                        file=str(path), line=row + 2, column="role")
    for col in ("rating", "ts") + (("pos",) if "pos" in frame.columns else ()):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"'{frame[col].iloc[row]}' is not a number", file=str(path),
                            line=row + 2, column=col)
        frame[col] = values
    frame["user"] = frame["user"].astype(str).str.strip()
    frame["item"] = frame["item"].astype(str).str.strip()
    bad = check_rating_scale(frame["rating"].to_numpy(), None if data is None else data.rating_scale)
    if bad is not None:
        raise DataError(f"{bad[1]}: '{frame['rating'].iloc[bad[0]]}'", file=str(path), line=bad[0] + 2,
                        column="rating")
    data = _with_folder_features(folder, frame, data, path)
    user_index, item_index = pd.Index(data.user_ids), pd.Index(data.item_ids)
    users = _lookup(user_index, frame["user"], path, "user")
    items = _lookup(item_index, frame["item"], path, "item")
    keep = first_occurrences(pd.DataFrame({"user": users, "item": items, "ts": frame["ts"].to_numpy()}),
                             lambda row: row + 2, str(path))
    lines = np.flatnonzero(keep) + 2  # each kept row's line in interactions.csv
    frame, roles = frame[keep].reset_index(drop=True), roles[keep].reset_index(drop=True)
    users, items = users[keep], items[keep]
    # Order: by pos when given (the user's order is theirs to fix), else by ts with seeded ties.
    key = frame["pos"].to_numpy(dtype=float) if "pos" in frame.columns else frame["ts"].to_numpy()
    tiebreak = np.random.default_rng(seed).permutation(len(frame))
    order = np.lexsort((tiebreak, key, users))
    inter = Interactions(users, items, frame["rating"].to_numpy(), frame["ts"].to_numpy(dtype=np.int64),
                         frame["pos"].to_numpy(dtype=float) if "pos" in frame.columns else None)
    given = inter  # file order, to point at a line of interactions.csv
    inter = inter.take(order)
    role = roles.to_numpy()[order]
    for name in ("val", "test"):
        overlap = np.intersect1d(inter.user[role == "train"], inter.user[role == name])
        if len(overlap):
            raise DataError(f"user '{data.user_ids[overlap[0]]}' has both train and {name} rows; "
                            "held-out users must be held out entirely", file=str(path), column="role")
    parts = {name: by_user(inter.take(role == name)) for name in ("val", "test")}

    negatives: dict[int, np.ndarray] = {}
    neg_path = folder / "negatives.csv"
    if neg_path.is_file():
        neg = _read_csv(neg_path, ("user", "item"))
        neg_users = _lookup(user_index, neg["user"].astype(str).str.strip(), neg_path, "user")
        neg_items = _lookup(item_index, neg["item"].astype(str).str.strip(), neg_path, "item")
        _check_negatives(neg_users, neg_items, given, lines, data, neg_path)
        for user in np.unique(neg_users):
            negatives[int(user)] = np.sort(neg_items[neg_users == user])
        missing = [u for name in ("val", "test") for u in parts[name] if u not in negatives]
        if missing:
            raise DataError(f"no negatives for held-out user '{data.user_ids[missing[0]]}'",
                            file=str(neg_path), column="user")
    else:
        rng = np.random.default_rng(seed)
        all_items = np.arange(data.n_items)
        for name in ("val", "test"):
            negatives |= sample_negatives(list(parts[name]), all_items, inter, rng, n_negatives)
    train = data.with_interactions(inter.take(role == "train"), name=f"{data.name}:train")
    return Split("external", train, parts["val"], parts["test"], negatives, seed=seed,
                 seen=items_by_user(inter, [*parts["val"], *parts["test"]]))


class MissingFeaturesWarning(UserWarning):
    """A split has no user or no item side features, so the models that read them cannot."""


def _with_folder_features(folder: Path, frame: pd.DataFrame, data: Dataset | None,
                          path: Path) -> Dataset:
    """The data set of an external split: ``data`` or one built from the interactions, with
    the folder's users.csv and items.csv as its side features when the folder has them."""
    users_path, items_path = folder / "users.csv", folder / "items.csv"
    if data is None:
        users = read_feature_table(users_path, "user") if users_path.is_file() else None
        items = read_feature_table(items_path, "item") if items_path.is_file() else None
        data = Dataset.from_frames(folder.name, frame[["user", "item", "rating", "ts"]], users,
                                   items, source=str(path))
    else:
        changes = {}
        for attr, file, column, ids in (("user_features", users_path, "user", data.user_ids),
                                        ("item_features", items_path, "item", data.item_ids)):
            if file.is_file():
                index = pd.Index(ids)
                table = read_feature_table(file, column, known=index)
                changes[attr] = table.reindex(index).reset_index(drop=True)
        data = dataclasses.replace(data, **changes) if changes else data
    lacking = []
    if len(data.user_features.columns) == 0:
        lacking.append("no user features (segment-pop gives popularity's scores and no model "
                       "sees a profile)")
    if len(data.item_features.columns) == 0:
        lacking.append("no item features (the feature models see no genres or years)")
    if lacking:
        warnings.warn(f"split folder {folder} has {' and '.join(lacking)}; pass --dataset NAME "
                      "with --split (the data set the split was cut from) or put users.csv and "
                      "items.csv in the folder", MissingFeaturesWarning, stacklevel=3)
    return data


def _check_negatives(users: np.ndarray, items: np.ndarray, given: Interactions, lines: np.ndarray,
                     data: Dataset, path: Path) -> None:
    """A negative its user interacted with (in any role: their target, a later positive, a
    training row) or a (user, item) pair listed twice is an error naming its line."""
    pairs = users * data.n_items + items
    first = np.unique(pairs, return_index=True)[1]
    twice = np.ones(len(pairs), dtype=bool)
    twice[first] = False
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        raise DataError(f"item '{data.item_ids[items[row]]}' is listed twice for user "
                        f"'{data.user_ids[users[row]]}'", file=str(path), line=row + 2, column="item")
    touched = given.user * data.n_items + given.item
    bad = np.isin(pairs, touched)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        where = int(lines[np.flatnonzero(touched == pairs[row])[0]])
        raise DataError(f"item '{data.item_ids[items[row]]}' is no negative for user "
                        f"'{data.user_ids[users[row]]}': they interacted with it "
                        f"(interactions.csv line {where})", file=str(path), line=row + 2,
                        column="item")


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed CSV: {exc}", file=str(path)) from None
    except pd.errors.EmptyDataError:
        raise DataError("file is empty", file=str(path)) from None
    frame.columns = [c.strip() for c in frame.columns]
    for col in required:
        if col not in frame.columns:
            raise DataError(f"missing column (has: {', '.join(frame.columns)})", file=str(path),
                            column=col)
    if len(frame) == 0:
        raise DataError("no rows", file=str(path))
    return frame


def _lookup(index: pd.Index, raw: pd.Series, path: Path, column: str) -> np.ndarray:
    found = index.get_indexer(raw)
    if (found < 0).any():
        row = int(np.flatnonzero(found < 0)[0])
        raise DataError(f"unknown {column} id '{raw.iloc[row]}'", file=str(path), line=row + 2,
                        column=column)
    return found.astype(np.int64)


def user_folds(data: Dataset, folds: int, *, seed: int = 0, n_negatives: int = 100) -> list[Split]:
    """The training users of ``data`` cut into ``folds`` new-user splits: fold f trains on every
    other fold and holds fold f's users out as its validation part (their chronological
    sequences and 100 negatives each). What the stack's out-of-fold episodes are made from:
    every training user is scored once by fits that never saw them."""
    if folds < 2:
        raise ThawError(f"out-of-fold episodes need at least 2 folds, not {folds}")
    inter = data.interactions.take(chronological_order(data.interactions, seed))
    users = np.unique(inter.user)
    if len(users) < folds:
        raise ThawError(f"{len(users)} training users cannot be cut into {folds} folds")
    rng = np.random.default_rng([seed, 11])
    fold_of = np.full(data.n_users, -1, dtype=np.int64)
    fold_of[rng.permutation(users)] = np.arange(len(users)) % folds
    all_items = np.arange(data.n_items)
    # Cross-domain data: each held-out user brings their source-domain history, as the
    # split's own validation and test users do (rows without a user id).
    source = data.source_domain.interactions if data.source_domain is not None else None
    histories = {} if source is None else by_user(source.take(chronological_order(source, seed)))
    out = []
    for f in range(folds):
        held = fold_of[inter.user] == f
        sequences = by_user(inter.take(held))
        negatives = sample_negatives(list(sequences), all_items, inter, rng, n_negatives)
        train = data.with_interactions(inter.take(~held), name=f"{data.name}:fold{f}")
        sources = {u: dataclasses.replace(histories[u], user=np.full(len(histories[u]), -1))
                   for u in sequences if u in histories}
        out.append(Split("new-user", train, sequences, {}, negatives, seed=seed,
                         seen=items_by_user(inter, list(sequences)), sources=sources))
    return out


def item_folds(data: Dataset, folds: int, *, seed: int = 0, n_negatives: int = 100,
               item_strata: tuple[int, ...] = (0,)) -> list[Split]:
    """The items of ``data`` cut into ``folds`` new-item splits: fold f trains on every
    interaction with the other folds' items and holds fold f's items out, its validation part
    being each (warm, known) user's interactions with them, ranked among fold f's items. What a
    stack on a new-item split learns its item side from: every training item is scored once,
    as a new item, by fits that never saw it (or saw only its first N interactions, N drawn
    from ``item_strata`` per item as ``make_split`` does, so the learner sees counts too)."""
    if folds < 2:
        raise ThawError(f"out-of-fold episodes need at least 2 folds, not {folds}")
    inter = data.interactions.take(chronological_order(data.interactions, seed))
    items = np.unique(inter.item)
    if len(items) < folds:
        raise ThawError(f"{len(items)} training items cannot be cut into {folds} folds")
    rng = np.random.default_rng([seed, 13])
    fold_of = np.full(data.n_items, -1, dtype=np.int64)
    fold_of[rng.permutation(items)] = np.arange(len(items)) % folds
    everyone = np.zeros(len(inter), dtype=np.int8)  # every user here is a training user
    out = []
    for f in range(folds):
        held_items = (fold_of == f).astype(np.int8)
        support = _item_support(inter, everyone, held_items, tuple(item_strata), seed + f)
        held = (held_items[inter.item] > 0) & ~support
        sequences = by_user(inter.take(held))
        negatives = sample_negatives(list(sequences), np.flatnonzero(held_items), inter, rng, n_negatives)
        train = data.with_interactions(inter.take(~held), name=f"{data.name}:itemfold{f}")
        out.append(Split("new-item", train, sequences, {}, negatives, np.flatnonzero(held_items),
                         users_known=True, seed=seed, item_strata=tuple(sorted(set(item_strata) | {0})),
                         seen=items_by_user(inter, list(sequences))))
    return out
