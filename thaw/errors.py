"""User-facing errors: the CLI prints these as one clear line, never as a traceback."""

from __future__ import annotations


class ThawError(Exception):
    """An error caused by the user's input or settings, not by a bug in thaw."""


class DataError(ThawError):
    """Bad input data; names the file, line and column where it can."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        self.file, self.line, self.column = file, line, column
        where = []
        if file is not None:
            where.append(str(file))
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
