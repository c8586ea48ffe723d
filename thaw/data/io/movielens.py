"""MovieLens: one set of feature names and spellings for every source (the official files,
RecBole's copies)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from thaw.data.io.columns import column_ids, column_integers, column_texts, interaction_frame
from thaw.data.io.tables import Table, read_bytes, read_text
from thaw.data.schema import Dataset

MOVIELENS_SCALE = (1.0, 5.0)

# u.genre order; "unknown" marks a movie with no genre and is dropped (an empty tuple says it).
GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
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


_GENRE_CANON: dict[str, str | None] = {_genre_key(g): g for g in GENRES[1:]}
_GENRE_CANON.update({"children": "Children's", "sciencefiction": "Sci-Fi", "noir": "Film-Noir",
                     "unknown": None, "nogenreslisted": None})
_GENRE_RANK = {g: i for i, g in enumerate(GENRES)}


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
    return tuple(sorted(out, key=lambda g: (_GENRE_RANK.get(g, len(GENRES)), g)))


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


def movielens_users(table: Table, uid: str, age: str, gender: str, occupation: str, zipcode: str,
                     occupation_codes: bool = False) -> pd.DataFrame:
    """age (int), gender, occupation name, zip_prefix (first 2 characters of the zip code)."""
    occupations = column_texts(table, occupation)
    if occupation_codes or occupations.str.fullmatch(r"\d{1,2}").all():
        codes = column_integers(table, occupation, "occupation code")
        bad = (codes < 0) | (codes >= len(_ML1M_OCCUPATIONS))
        if bad.any():
            raise table.error(int(np.argmax(bad)), occupation, "occupation code is not 0-20")
        occupations = pd.Series(np.asarray(_ML1M_OCCUPATIONS, dtype=object)[codes])
    return pd.DataFrame({
        "age": column_integers(table, age, "age"),
        "gender": column_texts(table, gender).to_numpy(dtype=object),
        "occupation": occupations.to_numpy(dtype=object),
        "zip_prefix": column_texts(table, zipcode).str[:2].to_numpy(dtype=object),
    }, index=column_ids(table, uid, "user id").to_numpy())


def recbole_movies(table: Table, types: dict[str, str]) -> pd.DataFrame:
    """RecBole's ML item file: movie_title, release_year (sometimes "V"), class or genre."""
    genre_field = next((f for f in ("class", "genre", "genres") if f in types), None)
    genres: list[tuple[str, ...]] = (
        [_normalise_genres(s.split()) for s in column_texts(table, genre_field)] if genre_field
        else [()] * len(table.frame))
    release = (pd.to_numeric(column_texts(table, "release_year"), errors="coerce")
               if "release_year" in types else None)
    frame = _movie_frame(column_ids(table, "item_id", "item id"), column_texts(table, "movie_title"), genres)
    if release is not None:  # the file's year wins; the title's fills its gaps ("V", "unkonwn")
        known = release.to_numpy(dtype=np.float64, na_value=np.nan)
        frame["year"] = np.where(np.isnan(known), frame["year"].to_numpy(), known)
    return frame


def load_ml100k_official(folder: Path, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """The GroupLens ml-100k files: u.data (tab), u.user and u.item (|, latin-1)."""
    ratings = _read_official(folder / "u.data", "\t", ["user", "item", "rating", "ts"],
                             ["user", "item"])
    users = _read_official(folder / "u.user", "|", ["user", "age", "gender", "occupation", "zip"])
    flags = [f"g{i}" for i in range(len(GENRES))]
    described = ["item", "title", "date", "video", "url"]
    items = _read_official(folder / "u.item", "|", [*described, *flags], described)
    matrix = np.column_stack([column_integers(items, f, "genre flag") for f in flags])
    not_flag = (matrix != 0) & (matrix != 1)
    if not_flag.any():
        row, col = np.argwhere(not_flag)[0]
        raise items.error(int(row), flags[col], f"genre flag for {GENRES[col]} is not 0 or 1")
    genres = [_normalise_genres(np.asarray(GENRES)[row == 1]) for row in matrix]
    release = pd.to_numeric(column_texts(items, "date").str.extract(r"(\d{4})\s*$")[0], errors="coerce")
    movies = _movie_frame(column_ids(items, "item", "item id"), column_texts(items, "title"), genres, release)
    return Dataset.from_frames(
        "ml-100k", interaction_frame(ratings, "user", "item", "rating", "ts", scale=rating_scale or MOVIELENS_SCALE),
        movielens_users(users, "user", "age", "gender", "occupation", "zip"), movies,
        source=str(folder), rating_scale=rating_scale or MOVIELENS_SCALE)


def load_ml1m_official(folder: Path, rating_scale: tuple[float, float] | None = None) -> Dataset:
    """The GroupLens ml-1m files: ratings.dat, users.dat, movies.dat ("::", latin-1)."""
    ratings = _read_official(folder / "ratings.dat", "::", ["user", "item", "rating", "ts"],
                             ["user", "item"])
    users = _read_official(folder / "users.dat", "::",
                           ["user", "gender", "age", "occupation", "zip"])
    items = _read_official(folder / "movies.dat", "::", ["item", "title", "genres"])
    genres = [_normalise_genres(s.split("|")) for s in column_texts(items, "genres")]
    movies = _movie_frame(column_ids(items, "item", "item id"), column_texts(items, "title"), genres)
    return Dataset.from_frames(
        "ml-1m", interaction_frame(ratings, "user", "item", "rating", "ts", scale=rating_scale or MOVIELENS_SCALE),
        movielens_users(users, "user", "age", "gender", "occupation", "zip",
                         occupation_codes=True),
        movies, source=str(folder), rating_scale=rating_scale or MOVIELENS_SCALE)


def _read_official(path: Path, sep: str, names: list[str],
                   text_columns: list[str] | None = None) -> Table:
    return read_text(path, read_bytes(path), sep, encoding="latin-1", names=names,
                      is_text=None if text_columns is None else text_columns.__contains__)
