"""RecBole atomic files: X.inter with optional X.user and X.item, each field named and typed
in the header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from thaw.data.io.columns import column_ids, column_texts, interaction_frame
from thaw.data.io.movielens import movielens_users, recbole_movies
from thaw.data.io.tables import Table, detect_encoding, read_bytes, read_text
from thaw.data.schema import Dataset
from thaw.errors import DataError


def with_suffix(prefix: Path, suffix: str) -> Path:
    """prefix + suffix, even when the prefix has dots (Path.with_suffix would replace them)."""
    return prefix.parent / (prefix.name + suffix)


def atomic_prefix(path: Path) -> Path:
    """A directory, a prefix or one of the files -> the prefix shared by X.inter/.user/.item."""
    if path.is_dir():
        own = path / path.name
        if with_suffix(own, ".inter").is_file():
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
                 ) -> tuple[Table, dict[str, str]]:
    """Read one atomic file; columns are renamed to the field names without their types."""
    data = read_bytes(path)
    table = read_text(path, data, "\t", encoding=detect_encoding(data),
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


def load_atomic(prefix: Path, name: str, rating_scale: tuple[float, float] | None = None
                 ) -> Dataset:
    inter_path = with_suffix(prefix, ".inter")
    inter, fields = _read_atomic(inter_path, "user_id", text_fields=("user_id", "item_id"))
    if "item_id" not in fields:
        raise DataError(f"missing column 'item_id'; the file has columns: {', '.join(fields)}",
                        file=str(inter_path), line=inter.header_line, column="item_id")
    ratings = interaction_frame(inter, "user_id", "item_id",
                                 "rating" if "rating" in fields else None,
                                 "timestamp" if "timestamp" in fields else None, scale=rating_scale)
    users = items = None
    user_path, item_path = with_suffix(prefix, ".user"), with_suffix(prefix, ".item")
    if user_path.is_file():
        table, types = _read_atomic(user_path, "user_id")
        if {"age", "gender", "occupation", "zip_code"} <= set(types):
            users = movielens_users(table, "user_id", "age", "gender", "occupation", "zip_code")
        else:
            users = _typed_features(table, "user_id", types)
    if item_path.is_file():
        table, types = _read_atomic(item_path, "item_id")
        if "movie_title" in types:
            items = recbole_movies(table, types)
        else:
            items = _typed_features(table, "item_id", types)
    return Dataset.from_frames(name, ratings, users, items, source=str(inter_path),
                               rating_scale=rating_scale)


def _typed_features(table: Table, id_field: str, types: dict[str, str]) -> pd.DataFrame:
    """Side features by RecBole type: float -> float, *_seq -> tuple, token -> str."""
    out: dict[str, object] = {}
    for field, kind in types.items():
        if field == id_field:
            continue
        text = column_texts(table, field)
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
    return pd.DataFrame(out, index=column_ids(table, id_field, "id").to_numpy())


def _all_floats(text: str) -> bool:
    try:
        [float(v) for v in text.split()]
    except ValueError:
        return False
    return True
