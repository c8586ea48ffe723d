"""Saving and loading bandit state without pickle: arrays go to safetensors, the rest to JSON.

A saved policy is a folder with two files, ``state.safetensors`` (every array: counters,
covariance matrices, feature tables) and ``state.json`` (class name, configuration, scalars and
the random generator's state), so a policy saved mid-run continues exactly where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from thaw.errors import ThawError

ARRAYS = "state.safetensors"
META = "state.json"
FORMAT_VERSION = 1


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The generator's full state as plain JSON-able data (PCG64's 128-bit ints stay exact)."""
    return dict(rng.bit_generator.state)


def restore_rng(state: Mapping[str, Any]) -> np.random.Generator:
    """A generator that continues the stream whose state ``rng_state`` captured."""
    name = state.get("bit_generator", "PCG64")
    bit_gen_cls = getattr(np.random, name, None)
    if bit_gen_cls is None:
        raise ThawError(f"unknown random bit generator '{name}' in saved state")
    bit_gen = bit_gen_cls()
    bit_gen.state = dict(state)
    return np.random.Generator(bit_gen)


def save_state(path: str | Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
    """Write ``arrays`` (safetensors) and ``meta`` (JSON) into the folder ``path``."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    save_file(clean, str(folder / ARRAYS))
    payload = {"format": FORMAT_VERSION, **meta}
    (folder / META).write_text(json.dumps(payload, indent=1, sort_keys=True, default=_json_default))
    return folder


def load_state(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read back what ``save_state`` wrote; a clear ThawError if the folder is not a saved state."""
    folder = Path(path)
    if not (folder / META).is_file() or not (folder / ARRAYS).is_file():
        raise ThawError(f"{folder}: not a saved bandit state (expected {META} and {ARRAYS})")
    try:
        meta = json.loads((folder / META).read_text())
    except json.JSONDecodeError as exc:
        raise ThawError(f"{folder / META}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT_VERSION:
        raise ThawError(f"{folder / META}: unsupported state format {meta.get('format')!r}")
    return dict(load_file(str(folder / ARRAYS))), meta


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in bandit state JSON")
