"""The ``thaw`` command line. User errors print one clear line and exit 2, never a traceback."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from thaw.errors import ThawError

app = typer.Typer(help="thaw: recommendation for users and items with little or no history.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

DEFAULT_DATASET = "ml-100k"
# Models are small and run on one thread each, so fitting several at once uses the cores;
# capped at 4 because more processes mostly add memory (each imports torch).
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))


def _csv_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ThawError(f"--{what} needs at least one value")
    return items


def _parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in _csv_list(text, "ks"))
    except ValueError:
        raise ThawError(f"--ks must be comma-separated integers, got '{text}'") from None
    if any(k < 0 for k in ks):
        raise ThawError("--ks must be non-negative")
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


def _echo_warnings(notes: list[str]) -> None:
    for note in notes:
        typer.secho(f"warning: {note}", fg=typer.colors.YELLOW, err=True)


@app.command()
def evaluate(
    dataset: Annotated[str | None, typer.Option(help="Data set name (see `thaw datasets`) or a path to RecBole atomic files, CSV or Parquet.")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated model names (see `thaw models`), or 'all'.")] = "all",
    protocol: Annotated[str, typer.Option(help="next-item (rank the K+1-th among 100 negatives) or rating (predict the query's ratings).")] = "next-item",
    ks: Annotated[str, typer.Option(help="Support sizes K to stratify by.")] = "1,3,5,10",
    out: Annotated[Path, typer.Option(help="Folder for results.csv, results.json, per_user.csv, the plot and report.html.")] = Path("results"),
    split: Annotated[Path | None, typer.Option(help="External split folder (interactions.csv with role column, optional negatives.csv), used exactly as given.")] = None,
    split_kind: Annotated[str, typer.Option(help="new-user, new-item, both, temporal or warm (ignored with --split).")] = "new-user",
    candidates: Annotated[str, typer.Option(help="sampled (target + 100 negatives) or full (every item not in the support).")] = "sampled",
    test_frac: Annotated[float, typer.Option(help="Fraction of users (or items) held out for testing.")] = 0.2,
    val_frac: Annotated[float, typer.Option(help="Fraction held out for validation (model selection only).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the split, negatives, models and bootstrap.")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals.")] = 1000,
    columns: Annotated[str | None, typer.Option(help="Column mapping for CSV/Parquet, e.g. user=uid,item=iid,rating=stars,ts=time.")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    jobs: Annotated[int, typer.Option(help="Models fitted at once, each in its own process on one core (same numbers as 1).")] = DEFAULT_JOBS,
) -> None:
    """Fit models on training users and evaluate them on held-out users, stratified by K."""
    from thaw.data.splits import make_split, read_split_folder

    ks_tuple = _parse_ks(ks)
    if split is not None:
        data = _load(dataset, columns) if dataset is not None else None
        the_split = read_split_folder(split, data, seed=seed)
    else:
        data = _load(dataset or DEFAULT_DATASET, columns)
        the_split = make_split(data, split_kind, test_frac=test_frac, val_frac=val_frac, seed=seed)
    _run([protocol], _model_list(models), the_split, ks_tuple, candidates, out, seed, bootstrap,
         progress, jobs)


@app.command()
def run(
    dataset: Annotated[str, typer.Option(help="Data set to run on.")] = DEFAULT_DATASET,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
    models: Annotated[str, typer.Option(help="Comma-separated model names, or 'all'.")] = "all",
    seed: Annotated[int, typer.Option(help="Seed for everything random.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    jobs: Annotated[int, typer.Option(help="Models fitted at once, each in its own process on one core (same numbers as 1).")] = DEFAULT_JOBS,
) -> None:
    """thaw's main job: every model, new-user split, both protocols, K = 1, 3, 5, 10."""
    from thaw.data.splits import make_split

    data = _load(dataset, None)
    the_split = make_split(data, "new-user", seed=seed)
    _run(["next-item", "rating"], _model_list(models), the_split, (1, 3, 5, 10), "sampled", out,
         seed, 1000, progress, jobs)


def _load(dataset: str, columns: str | None):
    from thaw.data.loaders import load_dataset

    return load_dataset(dataset, columns=_parse_columns(columns))


def _model_list(text: str) -> list[str]:
    from thaw.models.base import model_names

    known = model_names()
    names = known if text.strip() == "all" else _csv_list(text, "models")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ThawError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _run(protocols: list[str], names: list[str], the_split, ks: tuple[int, ...], candidates: str,
         out: Path, seed: int, bootstrap: int, progress: bool, jobs: int) -> None:
    from thaw.eval.protocol import DegenerateResultWarning, evaluate
    from thaw.eval.report import format_tables, write_results
    from thaw.models.base import make_model

    typer.echo(the_split.describe())
    results = []
    for protocol in protocols:
        models = {name: make_model(name) for name in names}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateResultWarning)
            result = evaluate(models, the_split, protocol=protocol, ks=ks, candidates=candidates,
                              n_bootstrap=bootstrap, seed=seed, progress=progress, jobs=jobs)
        typer.echo(format_tables(result))
        typer.echo("\nfit seconds: " + ", ".join(
            f"{m} {s:.1f}" for m, s in zip(result.timings["model"], result.timings["fit_seconds"])))
        _echo_warnings(result.warnings)
        results.append(result)
    paths = write_results(results, out, seed=seed, command=["thaw", *sys.argv[1:]])
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths.values())}")


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
    from thaw.models.base import model_names

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
