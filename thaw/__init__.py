"""thaw: recommendation for users and items with little or no history.

The public API, imported on first use (``import thaw`` stays light; the models pull in torch):

- data: ``load_dataset``, ``make_split``, ``Interactions``
- models: ``Context``, ``make_model``, ``model_names``, ``Stack``, ``save`` and ``load`` (a model's folder)
- evaluation: ``evaluate``
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from thaw._version import __version__

if TYPE_CHECKING:
    from thaw.data.loaders import load_dataset
    from thaw.data.schema import Interactions
    from thaw.data.splits import make_split
    from thaw.eval.protocol import evaluate
    from thaw.models.base import Context
    from thaw.persist import load, save
    from thaw.registry import make_model, model_names
    from thaw.stack import Stack

_EXPORTS = {
    "load_dataset": "thaw.data.loaders",
    "make_split": "thaw.data.splits",
    "Interactions": "thaw.data.schema",
    "Context": "thaw.models.base",
    "make_model": "thaw.registry",
    "model_names": "thaw.registry",
    "Stack": "thaw.stack",
    "save": "thaw.persist",
    "load": "thaw.persist",
    "evaluate": "thaw.eval.protocol",
}
__all__ = ["Context", "Interactions", "Stack", "__version__", "evaluate", "load", "load_dataset",
           "make_model", "make_split", "model_names", "save"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # looked up once
        return value
    raise AttributeError(f"module 'thaw' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
