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


# Messages that tell the user which setting to change name it the way the user gave it: the
# command line sets INTERFACE to "cli" at start, so a hint reads "--columns" there and
# "columns=" in Python.
INTERFACE = "python"


def option(name: str, cli: str = "", python: str = "") -> str:
    """A setting as the user's interface spells it, with an example value in that interface's
    form: ``option("columns", "rating=COLUMN", "{'rating': 'COLUMN'}")`` reads
    ``--columns rating=COLUMN`` on the command line and ``columns={'rating': 'COLUMN'}`` in Python."""
    if INTERFACE == "cli":
        return f"--{name.replace('_', '-')} {cli}".strip()
    return f"{name.replace('-', '_')}={python}"
