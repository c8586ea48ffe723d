"""Every model thaw has, by name: what ``make_model``, ``thaw models``, ``--param`` and
``thaw.load`` read.

A plain module: it imports each model class and lists it, and a class carries its registry
name as its ``name`` attribute. Adding a model means importing it here. It sits above
thaw/models, thaw/meta and thaw/stack because it imports from all three.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from thaw.errors import ThawError
from thaw.meta.hml import HML
from thaw.meta.melu import FineTune, FirstOrderMAML, FullMAML, MeLU
from thaw.meta.metacsr import MetaCSR, MetaCSRNoDiffusion, MetaCSRNoMeta, MetaCSRNoSequence
from thaw.meta.metatl import MetaTLModel, MetaTLNoMAML
from thaw.models.base import Recommender
from thaw.models.baselines import Popularity, RandomRecommender, SegmentPopularity
from thaw.models.content import ContentKNN, ContentMiniLM
from thaw.models.mf import BPR, MatrixFactorization
from thaw.models.sequential import GRU4Rec, SASRec
from thaw.models.widedeep import DeepFM, WideDeep
from thaw.stack.router import Stack


def _by_name(classes: Iterable[type[Recommender]]) -> dict[str, type[Recommender]]:
    out: dict[str, type[Recommender]] = {}
    for cls in classes:
        name = vars(cls).get("name")
        if not isinstance(name, str):  # an inherited name would make two models one
            raise TypeError(f"{cls.__name__} does not set its own registry name")
        if name in out:
            raise TypeError(f"model name '{name}' is used by {out[name].__name__} and {cls.__name__}")
        out[name] = cls
    return out


MODELS: dict[str, type[Recommender]] = _by_name((
    RandomRecommender, Popularity, SegmentPopularity, ContentKNN, ContentMiniLM,
    MatrixFactorization, BPR, MeLU, FullMAML, FirstOrderMAML, FineTune, HML, WideDeep, DeepFM,
    SASRec, GRU4Rec, MetaTLModel, MetaTLNoMAML, MetaCSR, MetaCSRNoDiffusion, MetaCSRNoSequence,
    MetaCSRNoMeta, Stack))
"""Registry name -> model class, in the order ``thaw models`` lists them."""


def model_names() -> list[str]:
    """Every model thaw has, in the registry's order."""
    return list(MODELS)


def model_class(name: str) -> type[Recommender]:
    if name not in MODELS:
        raise ThawError(f"unknown model '{name}'; known models: {', '.join(MODELS)}")
    return MODELS[name]


def make_model(name: str, *, seed: int | None = None, **params: Any) -> Recommender:
    """A new, unfitted model by registry name, made with ``params``.

    ``seed`` goes to every model whose constructor takes one; the models that take none have
    no randomness and ignore it.
    """
    cls = model_class(name)
    if seed is not None and "seed" in parameters(name):
        params = {"seed": seed, **params}
    return cls(**params)


# --- constructor parameters, for the command line --------------------------------------------

def parameters(name: str) -> dict[str, inspect.Parameter]:
    """The constructor parameters of model ``name``, annotations resolved to types. A
    constructor that passes ``**kwargs`` on to its base class has the base's parameters too."""
    out: dict[str, inspect.Parameter] = {}
    for cls in model_class(name).__mro__:
        if cls is Recommender or cls is object:
            break
        if "__init__" not in vars(cls):
            continue
        init = vars(cls)["__init__"]
        try:
            hints = typing.get_type_hints(init)
        except (NameError, TypeError):  # an annotation that names what only type checkers see
            hints = {}
        passes_on = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                passes_on = True
            elif p.kind is not p.VAR_POSITIONAL:
                out.setdefault(p.name, p.replace(annotation=hints.get(p.name, p.annotation)))
        if not passes_on:
            break
    return out


def parse_param(name: str, key: str, text: str) -> Any:
    """``text`` read as the value of model ``name``'s constructor parameter ``key``, by the
    parameter's annotation: a bool, int, float or str, a comma-separated tuple of them, or
    "none" where None is allowed. A ThawError names the parameters when ``key`` is not one."""
    known = parameters(name)
    if key not in known:
        raise ThawError(f"model '{name}' has no parameter '{key}'; its parameters: "
                        f"{', '.join(known) or '(none)'}")
    p = known[key]
    kind = p.annotation
    if kind is inspect.Parameter.empty:
        kind = str if p.default in (None, inspect.Parameter.empty) else type(p.default)
    try:
        return _parse(kind, text.strip())
    except (TypeError, ValueError) as exc:
        raise ThawError(f"{name}.{key}: {exc}") from None


def _parse(kind: Any, text: str) -> Any:
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in ("none", "null"):
            return None
        # str last: it reads anything
        for option in sorted((a for a in args if a is not type(None)), key=lambda a: a is str):
            try:
                return _parse(option, text)
            except (TypeError, ValueError):
                continue
        raise ValueError(f"'{text}' is not {_describe(kind)}")
    if origin in (tuple, list, Sequence):
        parts = [t.strip() for t in text.strip("()[] ").split(",") if t.strip()]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(parts) != len(args):
                raise ValueError(f"'{text}' is not {_describe(kind)}")
            types_of = list(args)
        else:
            types_of = [args[0] if args else str] * len(parts)
        if any(typing.get_origin(t) is not None and typing.get_origin(t) not in (typing.Union, types.UnionType)
               for t in types_of):
            raise TypeError(f"{_describe(kind)} cannot be set from the command line")
        return tuple(_parse(t, part) for t, part in zip(types_of, parts, strict=True))
    if kind is bool:
        lower = text.lower()
        if lower in ("true", "yes", "on", "1"):
            return True
        if lower in ("false", "no", "off", "0"):
            return False
        raise ValueError(f"'{text}' is not a bool (true or false)")
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"'{text}' is not an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"'{text}' is not a number") from None
    if kind in (str, Path):  # paths stay text, as the constructors accept them
        return text
    raise TypeError(f"{_describe(kind)} cannot be set from the command line")


def _describe(kind: Any) -> str:
    if isinstance(kind, type) and typing.get_origin(kind) is None:
        return {"bool": "a bool", "int": "an integer", "float": "a number"}.get(kind.__name__,
                                                                             f"a {kind.__name__}")
    return f"a {kind}".replace("typing.", "").replace("collections.abc.", "")
