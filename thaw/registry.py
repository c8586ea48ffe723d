"""Every model thaw has, by name: what ``make_model``, ``thaw models``, ``--param`` and
``thaw.load`` read.

A plain table: each name with the module and class that implement it, and a class carries its
registry name as its ``name`` attribute. Adding a model means adding its line to ``WHERE``.
It stands on the models' floor (README, "Layout"): it imports thaw/models/base.py alone, and
the classes of the floors above (thaw/meta, thaw/transfer, thaw/stack) by their dotted names,
on first use only, so the stack may make its members by name.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from thaw.errors import ThawError

if typing.TYPE_CHECKING:
    from thaw.models.base import Recommender

WHERE: dict[str, str] = {
    "random": "thaw.models.baselines:RandomRecommender",
    "pop": "thaw.models.baselines:Popularity",
    "segment-pop": "thaw.models.baselines:SegmentPopularity",
    "bias": "thaw.models.baselines:Biases",
    "content": "thaw.models.content:ContentKNN",
    "content-minilm": "thaw.models.content:ContentMiniLM",
    "mf": "thaw.models.mf:MatrixFactorization",
    "bpr": "thaw.models.mf:BPR",
    "melu": "thaw.meta.melu:MeLU",
    "maml": "thaw.meta.melu:FullMAML",
    "fomaml": "thaw.meta.melu:FirstOrderMAML",
    "finetune": "thaw.meta.melu:FineTune",
    "hml": "thaw.meta.hml:HML",
    "hml-soft": "thaw.meta.hml:SoftHML",
    "widedeep": "thaw.models.widedeep:WideDeep",
    "deepfm": "thaw.models.widedeep:DeepFM",
    "sasrec": "thaw.models.sequential:SASRec",
    "gru4rec": "thaw.models.sequential:GRU4Rec",
    "sasrec-x3": "thaw.models.ensemble:SASRecSeeds",
    "gru4rec-x3": "thaw.models.ensemble:GRU4RecSeeds",
    "metatl": "thaw.meta.metatl:MetaTLModel",
    "metatl-nomaml": "thaw.meta.metatl:MetaTLNoMAML",
    "metacsr": "thaw.meta.metacsr:MetaCSR",
    "metacsr-nodiffusion": "thaw.meta.metacsr:MetaCSRNoDiffusion",
    "metacsr-noseq": "thaw.meta.metacsr:MetaCSRNoSequence",
    "metacsr-nometa": "thaw.meta.metacsr:MetaCSRNoMeta",
    "coldwarm": "thaw.models.coldwarm:ColdWarmNet",
    "coldwarm-nogate": "thaw.models.coldwarm:ColdWarmNoGate",
    "coldwarm-nodkd": "thaw.models.coldwarm:ColdWarmNoDKD",
    "coldwarm-nobias": "thaw.models.coldwarm:ColdWarmNoBias",
    "coldwarm-coldonly": "thaw.models.coldwarm:ColdWarmColdOnly",
    "dssm": "thaw.models.two_tower:DSSM",
    "youtubednn": "thaw.models.two_tower:YouTubeDNN",
    "fm": "thaw.models.two_tower:FM",
    "tgt": "thaw.transfer.baselines:TargetOnly",
    "cmf": "thaw.transfer.baselines:CollectiveMF",
    "emcdr": "thaw.transfer.emcdr:EMCDR",
    "ptupcdr": "thaw.transfer.ptupcdr:PTUPCDR",
    "stack": "thaw.stack.router:Stack",
    "stack-table": "thaw.stack.router:StackTable",
}
"""Registry name -> "module:Class", in the order ``thaw models`` lists them. The classes are
imported on first use (``MODELS``), so listing the names imports no model, and no torch."""
CROSS_DOMAIN = ("tgt", "cmf", "emcdr", "ptupcdr")
"""The models of the cross-domain protocol (``thaw transfer``): those that need a source domain
(their class's ``needs_source``) and tgt, mf under the name that protocol reports it by; "all"
leaves them out."""
NAMED_ONLY = ("sasrec-x3", "gru4rec-x3")
"""Models "all" leaves out, run only where named: a seed ensemble costs its model's fit three
times over, and the main job has no room for it (BENCHMARKS section 5 measures it)."""


def _by_name(where: dict[str, str]) -> dict[str, type[Recommender]]:
    import importlib

    out: dict[str, type[Recommender]] = {}
    for name, target in where.items():
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if vars(cls).get("name") != name:  # an inherited name would make two models one
            raise TypeError(f"{cls.__name__} does not set its own registry name '{name}'")
        out[name] = cls
    return out


def __getattr__(attr: str) -> Any:
    if attr == "MODELS":
        return _models()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _models() -> dict[str, type[Recommender]]:
    """``MODELS``: registry name -> model class, every model imported (once, on first use)."""
    if "MODELS" not in globals():
        globals()["MODELS"] = _by_name(WHERE)
    return globals()["MODELS"]


def model_names() -> list[str]:
    """Every model thaw has, in the registry's order (nothing imported)."""
    return list(WHERE)


def model_class(name: str) -> type[Recommender]:
    models = _models()
    if name not in models:
        raise ThawError(f"unknown model '{name}'; known models: {', '.join(models)}")
    return models[name]


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
    from thaw.models.base import Recommender

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
    copied = getattr(model_class(name), "copies_of", "")
    if copied:  # an ensemble of copies (thaw/models/ensemble.py) takes its model's parameters
        for key, p in parameters(copied).items():
            out.setdefault(key, p)
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
