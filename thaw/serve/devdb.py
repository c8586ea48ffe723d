"""A throwaway PostgreSQL server on loopback, for the service's tests and benchmarks.

Debian's PostgreSQL binaries (``.ci/run`` installs them) are found on PATH or under
/usr/lib/postgresql; ``initdb`` makes a fresh cluster in a temporary folder (trust
authentication, user ``thaw``), ``pg_ctl`` starts it on a free port with ``fsync`` on, and
``stop`` removes it all. Run as root, it runs as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from glob import glob
from pathlib import Path


def pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None where PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayPostgres:
    """``with ThrowawayPostgres() as url:`` a SQLAlchemy URL of a new, empty server."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        if self.bin is None:
            raise FileNotFoundError("no PostgreSQL server installed (Debian: apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="thaw-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self.data, self.port = self.root / "data", free_port()
        self.url = f"postgresql+psycopg://thaw@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        subprocess.run([*self.as_user, str(self.bin / "initdb"), "-D", str(self.data), "-U", "thaw", "-A", "trust"],
                       check=True, capture_output=True)
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
                        "-w", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=on "
                        "-c max_connections=200", "start"], check=True, capture_output=True)
        return self.url

    def stop(self) -> None:
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
