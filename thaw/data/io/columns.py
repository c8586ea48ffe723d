"""Columns to typed values (ids, numbers, text), with errors that point at the file's line,
and the interactions frame made from them."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from thaw.data.io.tables import Table
from thaw.errors import DataError, ThawError, option

_COLUMN_GUESSES = {
    "user": ("user", "user_id", "userid", "uid", "user id", "customer_id", "visitorid"),
    "item": ("item", "item_id", "itemid", "iid", "item id", "movie_id", "movieid", "product_id"),
    "rating": ("rating", "ratings", "score", "stars"),
    "ts": ("ts", "timestamp", "time", "unix_time", "datetime"),
}


def resolve_columns(table: Table, columns: dict[str, str] | None) -> dict[str, str | None]:
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


def interaction_frame(table: Table, user: str | None, item: str | None,
                       rating: str | None = None, ts: str | None = None,
                       scale: tuple[float, float] | None = None) -> pd.DataFrame:
    """The user, item, rating, ts frame Dataset.from_frames expects, every value checked:
    ratings on ``scale`` (else on the scale inferred from them, see ``check_rating_scale``),
    and rows that repeat an earlier row's user, item and timestamp dropped with a warning."""
    assert user is not None and item is not None
    n = len(table.frame)
    frame = pd.DataFrame({
        "user": column_ids(table, user, "user id"),
        "item": column_ids(table, item, "item id"),
        "rating": _floats(table, rating, "rating") if rating else np.ones(n),
        "ts": column_integers(table, ts, "timestamp") if ts else np.arange(n, dtype=np.int64),
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


def column_ids(table: Table, column: str, what: str) -> pd.Series:
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


def _floats(table: Table, column: str, what: str) -> np.ndarray:
    values = _as_float_array(table.frame[column])
    bad = ~np.isfinite(values)
    if bad.any():
        raise table.error(int(np.argmax(bad)), column, f"{what} is not a finite number")
    return values


def column_integers(table: Table, column: str, what: str) -> np.ndarray:
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


def column_texts(table: Table, column: str) -> pd.Series:
    return table.frame[column].astype(str).str.strip()
