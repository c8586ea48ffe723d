"""The ``thaw`` command line. User errors print one clear line and exit 2, never a traceback."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer

from thaw.errors import ThawError

app = typer.Typer(help="thaw: recommendation for users and items with little or no history.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

DEFAULT_DATASET = "ml-100k"
# Models are small and run on one thread each, so fitting several at once uses the cores;
# capped at 4 because more processes mostly add memory (each imports torch).
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))
# The main job's new-item and both-cold runs: the models that can score an item nobody has
# rated (through its content or features, or a popularity prior), and the stack over them.
ITEM_COLD_MODELS = ("random", "pop", "segment-pop", "content", "content-minilm", "mf", "bpr", "melu",
                    "fomaml", "widedeep", "deepfm", "stack")
ITEM_STRATA = (0, 1, 3, 5, 10)


def _csv_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ThawError(f"--{what} needs at least one value")
    return items


def _parse_ks(text: str, what: str = "ks") -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in _csv_list(text, what))
    except ValueError:
        raise ThawError(f"--{what} must be comma-separated integers, got '{text}'") from None
    if any(k < 0 for k in ks):
        raise ThawError(f"--{what} must be non-negative")
    return ks


def _parse_columns(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping = {}
    for part in _csv_list(text, "columns"):
        if "=" not in part:
            raise ThawError(f"--columns takes name=column pairs (e.g. user=uid,item=iid), got '{part}'")
        key, value = part.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


def _parse_pairs(text: str | None) -> list[tuple[str, str]] | None:
    if not text:
        return None
    pairs = []
    for part in _csv_list(text, "compare"):
        a, sep, b = part.partition(":")
        if not sep or not a.strip() or not b.strip() or ":" in b:
            raise ThawError(f"--compare takes model pairs a:b, comma-separated (e.g. mf:bpr,metatl:metatl-nomaml), got '{part}'")
        pairs.append((a.strip(), b.strip()))
    return pairs


COMPARE_HELP = ("Model pairs to test, e.g. mf:bpr,metatl:metatl-nomaml (default: every pair); "
                "comparisons.csv has each pair's Wilcoxon p, raw and Holm-corrected.")


PARAM_HELP = ("A model's hyperparameter, MODEL.NAME=VALUE (e.g. sasrec.epochs=25, melu.hidden=32,32); "
              "repeat the option or separate with commas. Recorded in results.json.")


def _parse_params(texts: list[str] | None) -> dict[str, dict[str, Any]]:
    """--param values by model, each read by the type its constructor declares. A piece
    without '=' continues the value before it, so tuples take commas: melu.hidden=32,32."""
    from thaw.registry import model_class, parse_param

    pieces: list[str] = []
    for text in texts or []:
        for part in text.split(","):
            if "=" in part or not pieces:
                pieces.append(part)
            else:
                pieces[-1] += "," + part
    params: dict[str, dict[str, Any]] = {}
    for piece in pieces:
        key, sep, value = piece.partition("=")
        model, dot, name = key.strip().rpartition(".")
        if not (sep and dot and model and name):
            raise ThawError(f"--param takes MODEL.NAME=VALUE (e.g. sasrec.epochs=25), got '{piece.strip()}'")
        model_class(model)  # an unknown model is an error naming the known ones
        if model == "stack" and name == "members":
            raise ThawError("--param cannot set the stack's members: they are the other models of "
                            "--models (evaluate, run) or --members (fit)")
        params.setdefault(model, {})[name] = parse_param(model, name, value)
    return params


def _check_params(params: Mapping[str, Any], names: list[str]) -> None:
    from thaw.stack.router import FALLBACK

    in_play = set(names) | ({FALLBACK} if "stack" in names else set())
    stray = sorted(set(params) - in_play)
    if stray:
        raise ThawError(f"--param names {', '.join(stray)}, not among the models run "
                        f"({', '.join(sorted(in_play))})")


def _make_models(names: list[str], seed: int, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The run's models, each seeded with the run's seed (unless --param sets its seed) and made
    with its --param values. The stack routes over the other models of the run and is learned from the fits they already
    make; random is a sanity line, not a candidate."""
    from thaw.registry import make_model

    models = {n: make_model(n, **{"seed": seed, **params.get(n, {})}) for n in names if n != "stack"}
    if "stack" in names:
        members = [m for n, m in models.items() if n != "random"]
        models["stack"] = make_model("stack", members=members, **{"seed": seed, **params.get("stack", {})})
    return models


def _echo_warnings(notes: list[str]) -> None:
    for note in notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)


@app.command()
def evaluate(
    dataset: Annotated[str | None, typer.Option(help="Data set name (see `thaw datasets`) or a path to RecBole atomic files, CSV or Parquet.")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated model names (see `thaw models`), or 'all'.")] = "all",
    protocol: Annotated[str, typer.Option(help="next-item (rank the K+1-th among 100 negatives) or rating (predict the query's ratings).")] = "next-item",
    ks: Annotated[str, typer.Option(help="Support sizes K to stratify by (0: a profile and no history).")] = "0,1,3,5,10",
    out: Annotated[Path, typer.Option(help="Folder for results.csv, results.json, per_user.csv, the plot and report.html.")] = Path("results"),
    split: Annotated[Path | None, typer.Option(help="External split folder (interactions.csv with role column, optional negatives.csv), used exactly as given.")] = None,
    split_kind: Annotated[str, typer.Option(help="new-user, new-item, both, temporal or warm (ignored with --split).")] = "new-user",
    item_strata: Annotated[str, typer.Option(help="new-item and both: training interactions a held-out item may keep (results by item stratum N).")] = "0",
    candidates: Annotated[str, typer.Option(help="sampled (target + 100 negatives) or full (target + every item the user never interacted with).")] = "sampled",
    test_frac: Annotated[float, typer.Option(help="Fraction of users (or items) held out for testing.")] = 0.2,
    val_frac: Annotated[float, typer.Option(help="Fraction held out for validation (model selection only).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the split, negatives, models and bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    columns: Annotated[str | None, typer.Option(help="Column mapping for CSV/Parquet, e.g. user=uid,item=iid,rating=stars,ts=time.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    jobs: Annotated[int, typer.Option(help="Models fitted at once, each in its own process on one core (same numbers as 1).")] = DEFAULT_JOBS,
    compare: Annotated[str | None, typer.Option(help=COMPARE_HELP)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="MODEL.NAME=VALUE", help=PARAM_HELP)] = None,
) -> None:
    """Fit models on training users and evaluate them on held-out users, stratified by K."""
    from thaw.data.splits import make_split, read_split_folder

    ks_tuple = _parse_ks(ks)
    pairs = _parse_pairs(compare)
    params = _parse_params(param)
    if split is not None:
        data = _load(dataset, columns) if dataset is not None else None
        with warnings.catch_warnings(record=True) as caught:  # e.g. a split with no features
            warnings.simplefilter("always")
            the_split = read_split_folder(split, data, seed=seed)
        _echo_warnings([str(w.message) for w in caught])
    else:
        data = _load(dataset or DEFAULT_DATASET, columns)
        the_split = make_split(data, split_kind, test_frac=test_frac, val_frac=val_frac, seed=seed,
                               item_strata=_parse_ks(item_strata, "item-strata"))
    _run([protocol], [(the_split, _model_list(models))], ks_tuple, candidates, out, seed,
         bootstrap, progress, jobs, pairs=pairs, params=params)


@app.command()
def run(
    dataset: Annotated[str, typer.Option(help="Data set to run on.")] = DEFAULT_DATASET,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    models: Annotated[str, typer.Option(help="Comma-separated model names, or 'all'.")] = "all",
    seed: Annotated[int, typer.Option(help="Seed for everything random.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    jobs: Annotated[int, typer.Option(help="Models fitted at once, each in its own process on one core (same numbers as 1).")] = DEFAULT_JOBS,
    compare: Annotated[str | None, typer.Option(help=COMPARE_HELP)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="MODEL.NAME=VALUE", help=PARAM_HELP)] = None,
) -> None:
    """thaw's main job: every model and the stack, new users, new items and both, both protocols.

    The new-user split at K = 0, 1, 3, 5, 10 with every model and the stack over them; then the
    models that can score new items on the new-item and both-cold splits, item strata N = 0, 1,
    3, 5, 10."""
    from thaw.data.splits import make_split

    pairs = _parse_pairs(compare)
    params = _parse_params(param)
    data = _load(dataset, None)
    names = _model_list(models)
    runs = [(make_split(data, "new-user", seed=seed), names)]
    item_names = [n for n in names if n in ITEM_COLD_MODELS]
    for kind in ("new-item", "both"):
        if item_names:
            runs.append((make_split(data, kind, seed=seed, item_strata=ITEM_STRATA), item_names))
    _run(["next-item", "rating"], runs, (0, 1, 3, 5, 10), "sampled", out, seed, 1000, progress, jobs,
         pairs=pairs, params=params)


def _load(dataset: str, columns: str | None):
    from thaw.data.loaders import load_dataset

    return load_dataset(dataset, columns=_parse_columns(columns))


def _model_list(text: str) -> list[str]:
    from thaw.registry import model_names

    known = model_names()
    names = known if text.strip() == "all" else _csv_list(text, "models")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ThawError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _run(protocols: list[str], runs: list[tuple], ks: tuple[int, ...], candidates: str,
         out: Path, seed: int, bootstrap: int, progress: bool, jobs: int,
         pairs: list[tuple[str, str]] | None = None,
         params: Mapping[str, Mapping[str, Any]] | None = None) -> None:
    """Evaluate each (split, model names) under each protocol, print the tables, write results.
    ``pairs`` (from --compare) are tested in every run that has both models; ``params`` (from
    --param) go to the models they name, and every model's seed is ``seed``."""
    from thaw.eval.protocol import DegenerateResultWarning, evaluate
    from thaw.eval.report import format_tables, write_results
    from thaw.models.base import ModelSelectionSkipped

    every = {n for _, names in runs for n in names}
    unknown = sorted({m for pair in pairs or () for m in pair} - every)
    if unknown:
        raise ThawError(f"--compare names {', '.join(unknown)}, not among the models run")
    params = dict(params or {})
    _check_params(params, sorted({n for _, names in runs for n in names}))
    results = []
    for the_split, names in runs:
        typer.echo(the_split.describe())
        for protocol in protocols:
            models = _make_models(names, seed, params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateResultWarning)
                warnings.simplefilter("ignore", ModelSelectionSkipped)  # in result.warnings too
                result = evaluate(models, the_split, protocol=protocol, ks=ks, candidates=candidates,
                                  n_bootstrap=bootstrap, seed=seed, progress=progress, jobs=jobs,
                                  pairs=None if pairs is None else
                                  [p for p in pairs if set(p) <= set(models)])
            typer.echo(format_tables(result))
            typer.echo("\nfit seconds: " + ", ".join(
                f"{m} {s:.1f}" for m, s in zip(result.timings["model"], result.timings["fit_seconds"], strict=True)))
            _echo_warnings(result.warnings)
            results.append(result)
    paths = write_results(results, out, seed=seed, command=["thaw", *sys.argv[1:]], params=params)
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def fit(
    model: Annotated[str, typer.Option(help="Model to fit (see `thaw models`); 'stack' routes over --members.")] = "stack",
    out: Annotated[Path, typer.Option(help="Folder the fitted model is saved to (JSON + safetensors).")] = Path("models/stack"),
    dataset: Annotated[str, typer.Option(help="Data set name or path (see `thaw datasets`).")] = DEFAULT_DATASET,
    members: Annotated[str | None, typer.Option(help="The stack's members, comma-separated (default: a set that covers every K).")] = None,
    protocol: Annotated[str, typer.Option(help="What to fit for: next-item (ranking) or rating.")] = "next-item",
    val_frac: Annotated[float, typer.Option(help="Fraction of users held out for validation (model selection, the stack's routing).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the validation users and the models.")] = 0,
    columns: Annotated[str | None, typer.Option(help="Column mapping for CSV/Parquet, e.g. user=uid,item=iid.")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="MODEL.NAME=VALUE", help=PARAM_HELP.replace(" Recorded in results.json.", ""))] = None,
) -> None:
    """Fit one model on every user but the validation users and save it for `thaw recommend`."""
    from thaw.data.splits import make_split
    from thaw.eval.protocol import PROTOCOLS, SplitValidator
    from thaw.registry import make_model
    from thaw.stack.router import DEFAULT_MEMBERS

    if protocol not in PROTOCOLS:
        raise ThawError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if not 0 < val_frac < 1:
        raise ThawError("--val-frac must be a fraction between 0 and 1: validation users choose "
                        "the models' settings and the stack's routes")
    name = _model_list(model)[0]
    params = _parse_params(param)
    member_names = (_model_list(members) if members else list(DEFAULT_MEMBERS)) if name == "stack" else []
    _check_params(params, [name, *member_names])
    data = _load(dataset, columns)
    the_split = make_split(data, "new-user", test_frac=0.0, val_frac=val_frac, seed=seed)
    typer.echo(the_split.describe())
    # A seed set with --param wins over --seed; stack members are made here, so that --param
    # reaches them too.
    made = {m: make_model(m, **{"seed": seed, **params.get(m, {})}) for m in member_names}
    the_model = make_model(name, **{"seed": seed, **params.get(name, {})},
                           **({"members": list(made.values())} if name == "stack" else {}))
    the_model.set_task(protocol)
    the_model.fit(the_split.train, validate=SplitValidator(the_split, protocol))
    # The data set it was fitted on goes with it, so ids and titles resolve after loading.
    the_model.dataset = the_split.train
    path = the_model.save(out)
    if name == "stack":
        typer.echo(the_model.explain())
    typer.echo(f"saved {name} to {path}")


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `thaw fit`.")],
    history: Annotated[str, typer.Option(help="Items the user interacted with, oldest first, as the data set names them (empty: a brand-new user).")] = "",
    ratings: Annotated[str | None, typer.Option(help="Their ratings, comma-separated (default: the data set's mean rating).")] = None,
    profile: Annotated[str, typer.Option(help="Side features, e.g. gender=F,age=25.")] = "",
    n: Annotated[int, typer.Option("-n", "--n", help="How many items to recommend.")] = 10,
) -> None:
    """Recommend items to one user from their history and profile, with titles and scores."""
    from thaw.models.base import Context, top_n
    from thaw.models.persist import load

    if n < 1:
        raise ThawError("-n must be at least 1")
    model = load(model_dir)
    data = getattr(model, "dataset", None)
    if data is None:
        raise ThawError(f"{model_dir} holds no data set to name items by; save it with `thaw fit`")
    ctx = Context(user=None, history=_history(data, history, ratings), profile=_profile(data, profile))
    items, scores = top_n(model, ctx, np.arange(data.n_items), n)
    titles = data.item_features["title"] if "title" in data.item_features else None
    for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
        title = "" if titles is None else f"  {titles.iloc[item]}"
        typer.echo(f"{rank:3d}. {data.item_ids[item]:>8s}  {score:9.4f}{title}")


def _history(data, text: str, ratings: str | None):
    from thaw.data.schema import Interactions

    raw = [t.strip() for t in text.split(",") if t.strip()]
    items = data.item_index(raw)
    if ratings is None:
        values = [float(data.interactions.rating.mean())] * len(raw)
    else:
        try:
            values = [float(r) for r in _csv_list(ratings, "ratings")]
        except ValueError:
            raise ThawError(f"--ratings must be numbers, got '{ratings}'") from None
        if len(values) != len(raw):
            raise ThawError(f"--ratings has {len(values)} values for {len(raw)} --history items")
    return Interactions.of(items, values)


def _profile(data, text: str) -> dict:
    known = list(data.user_features.columns)
    out = {}
    for part in [t.strip() for t in text.split(",") if t.strip()]:
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in known:
            raise ThawError(f"--profile takes field=value pairs with fields among {', '.join(known) or '(none)'}, "
                            f"got '{part}'")
        value = value.strip()
        column = data.user_features[key.strip()]
        if pd.api.types.is_numeric_dtype(column):
            try:
                value = float(value)
            except ValueError:
                raise ThawError(f"--profile: {key.strip()} is a number in this data set, got '{value}'") from None
        out[key.strip()] = value
    return out


stack_app = typer.Typer(help="Inspect a fitted stack.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


@stack_app.command("explain")
def stack_explain(model_dir: Annotated[Path, typer.Argument(help="A folder written by `thaw fit --model stack`.")]) -> None:
    """Print the routing table a stack learned: band, choice, weights, validation metrics."""
    from thaw.models.persist import load

    model = load(model_dir)
    if not hasattr(model, "explain"):
        raise ThawError(f"{model_dir} holds a '{model.name}' model, not a stack")
    typer.echo(model.explain())


def _register_bandit_commands() -> None:
    from thaw.bandits.cli import bandit_replay, bandit_sim

    app.command("bandit-sim")(bandit_sim)
    app.command("bandit-replay")(bandit_replay)


_register_bandit_commands()


@app.command()
def datasets() -> None:
    """List the data sets thaw can load and where each would come from."""
    from thaw.data.loaders import available_datasets

    for info in available_datasets():
        typer.echo(f"{info.name:10s} {info.description}\n{'':10s} {info.location}")


@app.command()
def models() -> None:
    """Print the name of every model thaw has, one per line."""
    from thaw.registry import model_names

    for name in model_names():
        typer.echo(name)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    try:
        app()
    except ThawError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
