"""Saving and loading fitted models without pickle: a folder of JSON and safetensors.

``thaw.save(model, path)`` writes ``model.json`` (format version, thaw version, the model's
name, its class's registry name and every attribute as a JSON tree) and
``tensors.safetensors`` (every array, tensor and module weight, keyed by its attribute path).
A Recommender held by another (a router's members) is saved the same way in a subfolder named
by its path, e.g. ``members/pop/``. Nothing is ever unpickled: ``thaw.load`` takes the class
from the model registry, makes it with ``cls.__new__``, restores the attributes, calls
``_rebuild()`` so the model can re-create what is not data (networks, engines, feature spaces)
from them, and then loads the saved weights into the rebuilt modules, strictly. Attributes a
class lists in ``_transient`` are not saved and come back as None. Datasets and feature spaces
are data and are saved as such; anything else that is not data makes ``save`` fail, naming the
attribute.

It sits beside the registry, above every model: a save reads the class's own ``name`` (the
name it is registered by), a load finds the class by that name in the registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file
from torch import nn

from thaw import registry
from thaw._version import __version__
from thaw.data.features import FeatureSpace
from thaw.data.schema import Dataset, Interactions
from thaw.errors import ThawError
from thaw.models.base import Recommender

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
TENSORS_FILE = "tensors.safetensors"
_RECORDS = {"Dataset": Dataset, "Interactions": Interactions}  # frozen dataclasses of data
_PLAIN = {"FeatureSpace": FeatureSpace}  # classes whose attributes are all data
_SPARSE = ("csr_matrix", "csr_array", "csc_matrix", "csc_array")


def transient(cls: type) -> set[str]:
    """The attributes a model class and its bases leave out of a save."""
    return {name for c in cls.__mro__ for name in vars(c).get("_transient", ())}


# --- saving ----------------------------------------------------------------------------------

@dataclass
class _Saved:
    """One model encoded, nothing written yet: its JSON, its arrays, its nested models."""

    meta: dict[str, Any]
    tensors: dict[str, np.ndarray]
    children: dict[str, _Saved]


def save(model: Recommender, path: str | Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` into the folder ``path``; every check runs before anything is written.
    ``provenance`` (JSON: the command that fitted it, its settings) goes into model.json as is,
    for ``read_meta`` to find (``thaw fit`` replaces a folder only when rerun as it wrote it)."""
    saved = _Encoder(model, ()).encode_model()
    if provenance is not None:
        saved.meta["provenance"] = json.loads(json.dumps(dict(provenance), allow_nan=False))
    folder = Path(path)
    _write(saved, folder)
    return folder


def _write(saved: _Saved, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL_FILE).unlink(missing_ok=True)  # an older save here is void from now on
    save_file(saved.tensors, str(folder / TENSORS_FILE))
    for sub, child in saved.children.items():
        _write(child, folder / sub)
    # Written last: a save that fails half-way leaves no folder that looks complete.
    (folder / MODEL_FILE).write_text(json.dumps(saved.meta, indent=1, allow_nan=False) + "\n")
    # safetensors makes its file 0600 whatever the umask: the two files get the same mode, the
    # one the umask gives model.json, so a folder is shared (or private) whole.
    os.chmod(folder / TENSORS_FILE, stat.S_IMODE((folder / MODEL_FILE).stat().st_mode))


def read_meta(folder: str | Path) -> dict[str, Any] | None:
    """The model.json of a folder ``save`` wrote, or None when it holds none that reads."""
    try:
        meta = json.loads((Path(folder) / MODEL_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) and "format_version" in meta else None


def saved_names(meta: Mapping[str, Any]) -> set[str]:
    """The names ``save`` wrote at the top of the folder whose model.json is ``meta``: its two
    files and the first folder of each nested model's path."""
    names = {MODEL_FILE, TENSORS_FILE}
    todo: list[Any] = [meta.get("state")]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if isinstance(node.get("$model"), str):
                names.add(PurePath(node["$model"]).parts[0])
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)
    return names


def _registry_name(cls: type) -> str:
    """The name ``cls`` is registered by: its own ``name`` (one it inherits would load as the
    class it inherits from)."""
    name = vars(cls).get("name")
    if not isinstance(name, str):
        raise ThawError(f"cannot save a {cls.__name__}: its class sets no registry name of its own, "
                        "so it is not a registered model (thaw/registry.py)")
    registered = registry.MODELS.get(name)
    if registered is not cls:  # caught here, not at load: a load would fail or make another class
        known = f"{registered.__module__}.{registered.__qualname__}'s" if registered else "in no registry line"
        raise ThawError(f"cannot save a {cls.__name__}: its registry name '{name}' is {known}, so it "
                        "would not load back as this class (thaw/registry.py lists the models)")
    return name


class _Encoder:
    """Turns one model's attributes into a JSON tree plus a flat dict of arrays."""

    def __init__(self, model: Recommender, ancestors: tuple[int, ...]) -> None:
        self.model, self.ancestors = model, (*ancestors, id(model))
        self.tensors: dict[str, np.ndarray] = {}
        self.children: dict[str, _Saved] = {}

    def encode_model(self) -> _Saved:
        model = self.model
        cls_name = _registry_name(type(model))
        skip = transient(type(model))
        state = {}
        for attr, value in vars(model).items():
            if attr in skip:
                continue
            if isinstance(value, nn.Module):  # its weights; _rebuild re-creates the module
                state[attr] = {"$module": self.encode(dict(value.state_dict()), (attr,)),
                               "training": [m.training for m in value.modules()]}
            else:
                state[attr] = self.encode(value, (attr,))
        meta = {"format_version": FORMAT_VERSION, "thaw_version": __version__,
                "name": model.name, "class": cls_name, "state": state,
                "tensors": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in self.tensors.items()},
                "checksum": fingerprint(state, self.tensors)}
        return _Saved(meta, self.tensors, self.children)

    def fail(self, path: tuple[str, ...], what: str) -> ThawError:
        return ThawError(f"cannot save model '{self.model.name}': attribute '{'.'.join(path)}' "
                         f"{what}")

    def encode(self, value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, np.generic):  # before the plain types: np.float64 is a float
            return {"$scalar": self.encode(value.item(), path), "dtype": value.dtype.str}
        if value is None or type(value) in (bool, int, str):
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if type(value) in (list, tuple):
            items = [self.encode(v, (*path, str(i))) for i, v in enumerate(value)]
            return items if type(value) is list else {"$tuple": items}
        if type(value) is dict:
            if all(type(k) is str for k in value):
                return {"$dict": {k: self.encode(v, (*path, k)) for k, v in value.items()}}
            return {"$items": [[self.encode(k, path), self.encode(v, (*path, str(k)))]
                               for k, v in value.items()]}
        if type(value) is np.ndarray:  # subclasses (matrix, masked) would come back as plain arrays
            return self.array(value, path)
        if isinstance(value, torch.Tensor):
            if value.layout != torch.strided or value.dtype == torch.bfloat16:
                raise self.fail(path, f"is a {value.layout} {value.dtype} tensor, which is not stored")
            return {"$tensor": self.put(value.detach().cpu().numpy(), path),
                    "parameter": isinstance(value, nn.Parameter), "requires_grad": value.requires_grad}
        if type(value).__name__ in _SPARSE and sp.issparse(value):
            return {"$sparse": type(value).__name__, "shape": list(value.shape),
                    "parts": [self.array(getattr(value, p), (*path, p))
                              for p in ("data", "indices", "indptr")]}
        if type(value) is pd.RangeIndex:
            return {"$range": [value.start, value.stop, value.step], "name": self.encode(value.name, path)}
        if type(value) is pd.Index:
            return {"$index": self.array(self.values(value), path), "dtype": str(value.dtype),
                    "name": self.encode(value.name, path)}
        if type(value) is pd.Series:
            return {"$series": self.array(self.values(value), path), "dtype": str(value.dtype),
                    "index": self.encode(value.index, path), "name": self.encode(value.name, path)}
        if type(value) is pd.DataFrame:
            columns = [{"values": self.array(self.values(value.iloc[:, j]), (*path, str(name))),
                        "dtype": str(value.dtypes.iloc[j])} for j, name in enumerate(value.columns)]
            return {"$frame": columns, "index": self.encode(value.index, path),
                    "columns": self.encode(value.columns, path)}
        if type(value) in _RECORDS.values():
            return {"$record": type(value).__name__,
                    "fields": {f.name: self.encode(getattr(value, f.name), (*path, f.name))
                               for f in fields(value)}}
        if type(value) in _PLAIN.values():
            return {"$object": type(value).__name__, "state": self.encode(vars(value), path)}
        if isinstance(value, PurePath):
            return {"$path": str(value)}
        if isinstance(value, Recommender):
            return {"$model": self.child(value, path)}
        if isinstance(value, nn.Module):
            raise self.fail(path, "is a torch module inside a container; only a module held "
                                  "directly by an attribute is saved (as its state_dict)")
        raise self.fail(path, f"holds a {type(value).__name__}, which is not data thaw can save; "
                              f"list it in {type(self.model).__name__}._transient and re-create "
                              "it in _rebuild")

    def values(self, column: pd.Index | pd.Series) -> np.ndarray:
        """A column's values as numpy: its own array for numpy dtypes, objects otherwise."""
        return column.to_numpy() if isinstance(column.dtype, np.dtype) else column.to_numpy(dtype=object)

    def array(self, value: np.ndarray, path: tuple[str, ...]) -> Any:
        if value.dtype.kind in "biuf":
            return {"$array": self.put(value, path)}
        if value.dtype.kind in "OU":  # ids and labels: each element through the JSON tree
            return {"$objects": [self.encode(v, path) for v in value.ravel().tolist()],
                    "dtype": value.dtype.str, "shape": list(value.shape)}
        raise self.fail(path, f"is an array of dtype {value.dtype}, which is not stored")

    def put(self, array: np.ndarray, path: tuple[str, ...]) -> str:
        key = base = ".".join(path)
        n = 1
        while key in self.tensors:
            key, n = f"{base}#{n}", n + 1
        self.tensors[key] = np.ascontiguousarray(array)
        return key

    def child(self, model: Recommender, path: tuple[str, ...]) -> str:
        if id(model) in self.ancestors:
            raise self.fail(path, "refers back to a model that holds it")
        sub = base = "/".join(re.sub(r"[^\w.-]", "_", p).lstrip(".") or "_" for p in path)
        n = 1
        while sub in self.children:
            sub, n = f"{base}-{n}", n + 1
        self.children[sub] = _Encoder(model, self.ancestors).encode_model()
        return sub


def fingerprint(state: Any, tensors: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of a saved model's JSON state and every tensor (key, dtype, shape, bytes): what
    ``load`` checks, so a folder changed after its save is refused, not half-used."""
    digest = hashlib.sha256(json.dumps(state, sort_keys=True, allow_nan=False).encode())
    for key in sorted(tensors):
        array = np.ascontiguousarray(tensors[key])
        digest.update(f"\0{key}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


# --- loading ---------------------------------------------------------------------------------

def load(path: str | Path) -> Recommender:
    """The model saved in the folder ``path`` by ``save``, ready to score."""
    folder = Path(path)
    if not folder.is_dir():
        raise ThawError(f"{folder}: no such folder (expected a model saved by thaw.save)")
    for name in (MODEL_FILE, TENSORS_FILE):
        if not (folder / name).is_file():
            raise ThawError(f"{folder}: not a saved thaw model ({name} is missing)")
    file = folder / MODEL_FILE
    try:
        meta = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ThawError(f"{file}: not valid JSON ({exc})") from exc
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise ThawError(f"{file}: unknown format version {version!r} (this thaw reads {FORMAT_VERSION})")
    models = registry.MODELS
    name = meta.get("class")
    cls = models.get(name) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ThawError(f"{file}: unknown model {name!r}; known models: {', '.join(models)}")
    try:
        tensors = load_file(str(folder / TENSORS_FILE))
    except (SafetensorError, OSError) as exc:
        raise ThawError(f"{folder / TENSORS_FILE}: unreadable ({exc})") from exc
    _verify(folder, meta, tensors)
    decoder = _Decoder(folder, tensors)

    model = cls.__new__(cls)
    modules = {}
    try:
        for attr, node in meta["state"].items():
            if isinstance(node, dict) and "$module" in node:
                modules[attr] = decoder.decode(node["$module"]), node["training"]
            else:
                vars(model)[attr] = decoder.decode(node)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ThawError(f"{file}: damaged ({type(exc).__name__}: {exc})") from exc
    for attr in transient(cls):
        vars(model)[attr] = None
    with torch.random.fork_rng(devices=[]):  # fresh modules draw weights: keep the caller's stream
        model._rebuild()
    for attr, (state, training) in modules.items():
        module = vars(model).get(attr)
        if not isinstance(module, nn.Module):
            raise ThawError(f"{file}: '{attr}' was a torch module, but {cls.__name__}._rebuild "
                            "did not re-create it")
        try:
            module.load_state_dict(state, strict=True)
            for m, flag in zip(module.modules(), training, strict=True):
                m.training = flag
        except (RuntimeError, ValueError) as exc:
            raise ThawError(f"{file}: the saved weights of '{attr}' do not fit the rebuilt "
                            f"module ({str(exc).splitlines()[0]})") from exc
    return model


def _verify(folder: Path, meta: dict[str, Any], tensors: Mapping[str, np.ndarray]) -> None:
    """A ThawError when the folder is not as its save left it: a tensor missing, added, or of
    another dtype or shape than recorded, or any change to the state or the tensors' values
    (the checksum). Folders saved before these records were kept load unchecked."""
    if "tensors" not in meta and "checksum" not in meta:
        return
    again = "it was changed after its save; save the model again (thaw.save, thaw fit)"
    record = meta.get("tensors")
    if not isinstance(record, dict) or not isinstance(meta.get("checksum"), str):
        raise ThawError(f"{folder / MODEL_FILE}: its record of the tensors is damaged; {again}")
    for key in sorted(set(record) | set(tensors)):
        if key not in tensors:
            raise ThawError(f"{folder / TENSORS_FILE}: '{key}' is missing; {again}")
        spec, array = record.get(key), tensors[key]
        if not isinstance(spec, dict):
            raise ThawError(f"{folder / TENSORS_FILE}: '{key}' was not written by the save; {again}")
        if [array.dtype.str, list(array.shape)] != [spec.get("dtype"), spec.get("shape")]:
            raise ThawError(f"{folder / TENSORS_FILE}: '{key}' is {array.dtype.str} of shape {list(array.shape)}, "
                            f"saved as {spec.get('dtype')} of shape {spec.get('shape')}; {again}")
    if fingerprint(meta.get("state"), tensors) != meta["checksum"]:
        raise ThawError(f"{folder}: the saved state or tensor values differ from the save's checksum; {again}")


class _Decoder:
    """The inverse of ``_Encoder.encode``, reading arrays from one folder's tensors."""

    def __init__(self, folder: Path, tensors: dict[str, np.ndarray]) -> None:
        self.folder, self.tensors = folder, tensors

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        tag = next((k for k in node if k.startswith("$")), None)
        if tag not in self.TAGS:
            raise ValueError(f"unknown node {tag!r}")
        return self.TAGS[tag](self, node)

    def scalar(self, node: dict) -> Any:
        return np.dtype(node["dtype"]).type(self.decode(node["$scalar"]))

    def dictionary(self, node: dict) -> dict:
        return {k: self.decode(v) for k, v in node["$dict"].items()}

    def items(self, node: dict) -> dict:
        return {self.decode(k): self.decode(v) for k, v in node["$items"]}

    def array(self, node: dict) -> np.ndarray:
        return self.tensors[node["$array"]]

    def objects(self, node: dict) -> np.ndarray:
        items = [self.decode(v) for v in node["$objects"]]
        out = np.empty(len(items), dtype=object)
        for i, v in enumerate(items):  # one by one: numpy would unpack tuples into a new axis
            out[i] = v
        return out.reshape(node["shape"]).astype(np.dtype(node["dtype"]))

    def tensor(self, node: dict) -> torch.Tensor:
        value = torch.from_numpy(self.tensors[node["$tensor"]])
        if node["parameter"]:
            return nn.Parameter(value, requires_grad=node["requires_grad"])
        return value.requires_grad_(node["requires_grad"])

    def sparse(self, node: dict) -> Any:
        if node["$sparse"] not in _SPARSE:
            raise ValueError(f"unknown sparse format {node['$sparse']!r}")
        parts = tuple(self.decode(p) for p in node["parts"])
        return getattr(sp, node["$sparse"])(parts, shape=tuple(node["shape"]))

    def frame(self, node: dict) -> pd.DataFrame:
        index = self.decode(node["index"])
        data = {j: pd.Series(self.decode(c["values"]), dtype=c["dtype"], index=index)
                for j, c in enumerate(node["$frame"])}
        frame = pd.DataFrame(data, index=index)
        frame.columns = self.decode(node["columns"])
        return frame

    def record(self, node: dict) -> Dataset | Interactions:
        return _RECORDS[node["$record"]](**{k: self.decode(v) for k, v in node["fields"].items()})

    def plain(self, node: dict) -> Any:
        cls = _PLAIN[node["$object"]]
        value = cls.__new__(cls)
        vars(value).update(self.decode(node["state"]))
        return value

    def model(self, node: dict) -> Recommender:
        sub = Path(node["$model"])
        if sub.is_absolute() or ".." in sub.parts:
            raise ValueError(f"nested model outside the folder: {sub}")
        return load(self.folder / sub)

    TAGS = {
        "$float": lambda self, node: float(node["$float"]),
        "$tuple": lambda self, node: tuple(self.decode(v) for v in node["$tuple"]),
        "$scalar": scalar, "$dict": dictionary, "$items": items, "$array": array,
        "$objects": objects, "$tensor": tensor, "$sparse": sparse,
        "$range": lambda self, node: pd.RangeIndex(*node["$range"], name=self.decode(node["name"])),
        "$index": lambda self, node: pd.Index(self.decode(node["$index"]), dtype=node["dtype"],
                                              name=self.decode(node["name"])),
        "$series": lambda self, node: pd.Series(self.decode(node["$series"]), dtype=node["dtype"],
                                                index=self.decode(node["index"]),
                                                name=self.decode(node["name"])),
        "$frame": frame, "$record": record, "$object": plain, "$model": model,
        "$path": lambda self, node: Path(node["$path"]),
    }
