"""Reading text and Parquet files into a Table: a frame plus a way back from a row to its
line, used only to report bad values."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from thaw.errors import DataError


@dataclass
class Table:
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


def read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise DataError("expected a file, found a directory", file=str(path)) from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def detect_encoding(data: bytes) -> str:
    """UTF-8 when the bytes are valid UTF-8, else latin-1 (which never fails)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8"


def sniff_sep(data: bytes, encoding: str) -> str:
    """The most frequent of , tab ; | in the header line; a comma when none occurs."""
    first = data.split(b"\n", 1)[0].decode(encoding)
    counts = {s: first.count(s) for s in (",", "\t", ";", "|")}
    best = max(counts, key=lambda s: counts[s])
    return best if counts[best] else ","


def read_text(path: Path, data: bytes, sep: str, *, encoding: str, names: list[str] | None = None,
               quoted: bool = False, is_text: Callable[[str], bool] | None = None) -> Table:
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

    return Table(frame, path, locate, header_line)


def _check_header(path: Path, names: list[str], line: int) -> None:
    seen = set()
    for name in names:
        if not name:
            raise DataError("empty column name in the header", file=str(path), line=line)
        if name in seen:
            raise DataError(f"duplicate column '{name}' in the header", file=str(path), line=line,
                            column=name)
        seen.add(name)


def _read_quoted(path: Path, data: bytes, sep: str, encoding: str) -> Table:
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

    return Table(frame, path, locate, first[0])


def read_parquet(path: Path) -> Table:
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt or foreign file
        raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    frame.columns = [str(c) for c in frame.columns]
    if len(frame) == 0:
        raise DataError("no data rows", file=str(path))
    return Table(frame.reset_index(drop=True), path, lambda row: (None, None))
