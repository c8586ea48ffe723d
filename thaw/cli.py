"""The ``thaw`` command line. User errors print one clear line and exit 2, never a traceback;
Ctrl-C prints one line and exits 130 (SIGTERM: 143), with every worker process stopped.

Everything heavy (numpy, pandas, torch, the models) is imported inside the command that needs
it, so ``thaw --help`` and ``thaw models`` answer at once. Commands that live in other modules
are listed in ``LAZY_COMMANDS`` and imported only when they run.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from thaw import errors
from thaw.errors import ThawError

# Commands defined elsewhere: name -> ("module:function", one-line help for `thaw --help`).
# The help is given here so that listing the commands imports nothing; tests check that it
# is the function's own first docstring line.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "bandit-sim": ("thaw.bandits.cli:bandit_sim",
                   "Simulate bandit policies on a data set and write their cumulative regret (CSV and PNG)."),
    "bandit-replay": ("thaw.bandits.cli:bandit_replay",
                      "Evaluate bandit policies offline on a log: replay (uniform logs) and IPS/SNIPS/DR "
                      "(any logged propensities)."),
    "transfer": ("thaw.transfer.cli:transfer",
                 "Evaluate cross-domain transfer (EMCDR, PTUPCDR, ...) for users cold in a target domain."),
    "serve": ("thaw.serve.cli:serve",
              "Serve recommendations over HTTP: events in, recommendations out, API docs at /docs."),
    "retrain": ("thaw.serve.cli:retrain",
                "Refit a served model on its data plus every event the store has gathered."),
}


class _LazyGroup(TyperGroup):
    """The top-level command group: LAZY_COMMANDS are imported when they run, not when listed."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in LAZY_COMMANDS and cmd_name not in self.commands:
            target, short = LAZY_COMMANDS[cmd_name]
            if self._listing:  # `thaw --help`: the name and its line are enough
                return typer.core.TyperCommand(cmd_name, help=short)
            self.add_command(_load_command(cmd_name, target), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def _load_command(name: str, target: str) -> Any:
    import importlib

    module, _, function = target.partition(":")
    holder = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    holder.command(name)(getattr(importlib.import_module(module), function))
    return typer.main.get_command(holder)


app = typer.Typer(cls=_LazyGroup, help="thaw: recommendation for users and items with little or no history.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

DEFAULT_DATASET = "ml-100k"
MAX_JOBS = 4
MAIN_JOB_STACK = {"folds": 3, "max_learned": 6}
ITEM_STRATA = (0, 1, 3, 5, 10)
# Options that change how a run goes, not what it computes: a results folder written with
# other values of these is still "the same command" (see OUT_HELP).
NOT_RESULT_SETTINGS = frozenset({"out", "jobs", "progress", "overwrite", "nproc", "device"})
FEW_TEST_USERS = 30

JOBS_HELP = (f"Models fitted at once, each in its own process on one thread (the numbers are the same as "
             f"with 1). Default: the cores not busy when the run starts (by the load average), at most "
             f"{MAX_JOBS}; give fewer when other work will share the cores.")
OUT_HELP = ("Results folder, written whole at the end (a temporary folder moved into place): an "
            "interrupted run leaves the previous results untouched. An existing results folder is "
            "replaced only by a rerun of the command that wrote it (same command and settings; "
            "--jobs and --progress may differ); other results need --overwrite.")
OVERWRITE_HELP = "Replace a results folder written by another command."
NPROC_HELP = ("Processes to train with on this machine (torch.distributed: gloo on CPU, NCCL with "
              "--device cuda): the command reruns itself under torchrun. Several machines: start "
              "torchrun yourself (README).")
DEVICE_HELP = "Where torch models train: cpu, cuda or cuda:N (the fitted weights come back to the CPU)."
COMPARE_HELP = ("Model pairs to test, e.g. mf:bpr,metatl:metatl-nomaml (default: every pair); "
                "comparisons.csv has each pair's Wilcoxon p, raw and Holm-corrected.")
PARAM_HELP = ("A model's hyperparameter, MODEL.NAME=VALUE (e.g. sasrec.epochs=25, melu.hidden=32,32); "
              "repeat the option or separate with commas. Recorded in results.json.")
RATING_SCALE_HELP = ("The ratings' scale, LOW,HIGH (e.g. 1,5); a rating outside it is an error naming its "
                     "line. Default: MovieLens's 1-5, else inferred from the bulk of the ratings.")


# --- reading and checking options (all before any work) ---------------------------------------

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
        if key.strip() not in ("user", "item", "rating", "ts"):
            raise ThawError(f"--columns names user, item, rating and ts (e.g. user=uid,item=iid), got '{key.strip()}'")
        mapping[key.strip()] = value.strip()
    return mapping


def _parse_scale(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ThawError(f"--rating-scale takes LOW,HIGH (e.g. 1,5), got '{text}'") from None
    if not low < high:
        raise ThawError(f"--rating-scale takes LOW,HIGH with LOW below HIGH, got '{text}'")
    return low, high


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
        if name == "members" and _is_stack(model):
            raise ThawError("--param cannot set the stack's members: they are the other models of "
                            "--models (evaluate, run) or --members (fit)")
        params.setdefault(model, {})[name] = parse_param(model, name, value)
    for model, values in params.items():
        _check_values(model, values)
        _honour_chosen(model, values)
    return params


def _numbers(value: Any) -> list[float]:
    """The numbers in a parameter's value (one, or a tuple's), bools left out."""
    return [v for v in (value if isinstance(value, tuple) else (value,))
            if isinstance(v, int | float) and not isinstance(v, bool)]


def _check_values(model: str, values: Mapping[str, Any]) -> None:
    """Numbers no model can use, refused before any work: NaN, a negative number, infinity
    (except where the model's own defaults hold it: hml-soft's temperatures), and below 1 for
    a setting that counts something (``Recommender.counting_params``)."""
    import math

    from thaw.registry import model_class, parameters

    cls, defaults = model_class(model), parameters(model)
    related = {name: {name, cls.chosen_from.get(name)} | {k for k, g in cls.chosen_from.items() if g == name}
               for name in values}
    for name, value in values.items():
        for number in _numbers(value):
            if math.isnan(number):
                why = "is not a number"
            elif number < 0:
                why = "is negative; thaw's models take no negative settings"
            elif math.isinf(number) and not any(math.isinf(d) for r in related[name] if r in defaults
                                                for d in _numbers(defaults[r].default)):
                why = "is not a finite number"
            elif name in cls.counting_params and number < 1:
                why = "must be at least 1 (it counts something the model cannot do without)"
            else:
                continue
            raise ThawError(f"--param {model}.{name}: {number:g} {why}")


def _honour_chosen(model: str, values: dict[str, Any]) -> None:
    """A setting the model would choose on validation users (``Recommender.chosen_from``) is
    fixed when given: its candidates become that value alone, so the run uses what was given
    and results.json records it. A one-value grid given alone sets the setting; a setting given
    beside other candidates would be replaced by one of them, which is an error."""
    from thaw.registry import model_class, parameters

    chosen_from, given = model_class(model).chosen_from, set(values)
    for name, grid in chosen_from.items():
        if name in given and grid not in values:
            values[grid] = (values[name],)
            fixed_too = [k for k, g in chosen_from.items() if g == grid and k != name and k not in values]
            for other in fixed_too:
                warnings.warn(f"--param {model}.{name} fixes {model}.{grid} to one value, so {model}.{other} "
                              f"is not chosen on validation users either: it keeps "
                              f"{parameters(model)[other].default:g} (set it with --param {model}.{other}=VALUE)",
                              stacklevel=2)
        elif name in given and grid in given and tuple(values[grid]) != (values[name],):
            raise ThawError(f"--param {model}.{name} and {model}.{grid} both given: {name} is chosen from "
                            f"{grid} on validation users, so the {name} given would not be used; give "
                            f"{model}.{name} alone to fix it, or {model}.{grid} alone to choose from it")
        elif name not in given and grid in given and len(values[grid]) == 1:
            values[name] = values[grid][0]


def _is_stack(name: str) -> bool:
    """Whether model ``name`` is a stack: made of the other models of a run (its members)."""
    from thaw.registry import model_class
    from thaw.stack import Stack

    return issubclass(model_class(name), Stack)


def _check_params(params: Mapping[str, Any], names: list[str]) -> None:
    from thaw.stack.router import FALLBACK

    in_play = set(names) | ({FALLBACK} if any(_is_stack(n) for n in names) else set())
    stray = sorted(set(params) - in_play)
    if stray:
        raise ThawError(f"--param names {', '.join(stray)}, not among the models run "
                        f"({', '.join(sorted(in_play))})")


def _check_models(names: list[str], pairs: list[tuple[str, str]] | None,
                  params: Mapping[str, Any]) -> None:
    unknown = sorted({m for pair in pairs or () for m in pair} - set(names))
    if unknown:
        raise ThawError(f"--compare names {', '.join(unknown)}, not among the models run")
    _check_params(params, names)


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ThawError(f"--{what} must be one of {', '.join(choices)}, got '{value}'")


def _check_common(seed: int, jobs: int | None, bootstrap: int = 1) -> None:
    if seed < 0:
        raise ThawError(f"--seed must be a non-negative integer, got {seed}")
    if jobs is not None and jobs < 1:
        raise ThawError(f"--jobs must be at least 1, got {jobs}")
    if bootstrap < 1:
        raise ThawError(f"--bootstrap must be at least 1 (resamples for the 95% intervals: 1000 by "
                        f"default, 100 for a quick look), got {bootstrap}")


def _check_fractions(test_frac: float, val_frac: float) -> None:
    if test_frac <= 0:
        raise ThawError(f"--test-frac {test_frac:g} holds out no test users, so there is nothing to "
                        "evaluate: give a fraction between 0 and 1 (default 0.2)")
    if test_frac >= 1:
        raise ThawError(f"--test-frac must be below 1 (the rest trains the models), got {test_frac:g}")
    if not 0 <= val_frac < 1:
        raise ThawError(f"--val-frac must be at least 0 and below 1, got {val_frac:g}")
    if test_frac + val_frac >= 1:
        raise ThawError(f"--test-frac {test_frac:g} and --val-frac {val_frac:g} leave no training users: "
                        "their sum must be below 1")


def _auto_jobs() -> int:
    """The cores not busy now (by the 1-minute load average), at least 1 and at most MAX_JOBS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(round(os.getloadavg()[0]))
    except OSError:
        busy = 0
    return max(1, min(MAX_JOBS, cores - busy))


# --- the results folder ------------------------------------------------------------------------

def _settings(ctx: typer.Context) -> dict[str, Any]:
    """The command and the options that decide its results, as results.json records them."""
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in ctx.params.items()
              if k not in NOT_RESULT_SETTINGS}
    return json.loads(json.dumps({"command": ctx.info_name, **values}))


def check_writable(out: Path, what: str = "--out") -> None:
    """``out`` can be made: not a file, under a folder we can write in."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise ThawError(f"{what} {out} is a file, not a folder")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ThawError(f"{what} {out}: {ancestor} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".thaw-probe-", dir=ancestor))
    except OSError as exc:
        raise ThawError(f"{what} {out}: cannot write in {ancestor} ({exc.strerror or exc})") from None


def _check_out(out: Path, settings: Mapping[str, Any], overwrite: bool,
               kind: str = "results") -> dict[str, Any] | None:
    """Refuse, before any work, an --out the run could not or should not replace (see
    OUT_HELP): ``kind`` "results" (a results folder) or "model" (a folder `thaw fit` saves a
    model in). Returns the previous record (results.json; a model's provenance) when this run
    is a rerun of the command that wrote it."""
    check_writable(out)
    if not out.is_dir() or not any(out.iterdir()):
        return None
    if kind == "model":
        from thaw.persist import read_meta, saved_names

        meta = read_meta(out)
        record = {} if meta is None else meta.get("provenance", {})
        previous = None if meta is None else {  # shaped as results.json is
            **({"settings": record["settings"]} if "settings" in record else {}),
            "provenance": {"command": record.get("command", "a command it did not record")}}
        ours = set() if meta is None else saved_names(meta)
        what, replacing = "a thaw model", "a model saved there would mix with"
    else:
        from thaw.eval.report import RESULT_FILES, read_results_json

        previous, ours = read_results_json(out), set(RESULT_FILES)
        what, replacing = "thaw results", "replacing it would delete"
    if previous is None:
        raise ThawError(f"--out {out} is a folder of other files, not {what}; give a new or empty "
                        "folder (thaw writes its folder whole)")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if foreign:
        raise ThawError(f"--out {out} holds files thaw did not write ({', '.join(foreign[:5])}), which "
                        f"{replacing}; move them, or give another --out")
    command = "thaw " + " ".join(sys.argv[1:])
    rerun = (previous.get("settings") == settings if "settings" in previous
             else previous.get("provenance", {}).get("command") == command)
    if rerun:
        return previous
    if not overwrite:
        was = previous.get("provenance", {}).get("command", "another command")
        held = "the results of another command" if kind == "results" else "a model fitted by another command"
        raise ThawError(f"--out {out} holds {held} ({was}); give another --out, or --overwrite to "
                        "replace it")
    return None


def _previous_seconds(previous: Mapping[str, Any] | None) -> dict[tuple[str, str], dict[str, float]]:
    """Each model's fit and score seconds in a previous run of this command, by (split kind,
    protocol): what the progress bar's ETA is made from."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for run in (previous or {}).get("runs", []):
        key = (run.get("meta", {}).get("split_kind", ""), run.get("meta", {}).get("protocol", ""))
        out[key] = {t["model"]: float(t["fit_seconds"]) + float(t["score_seconds"])
                    for t in run.get("timings", []) if "model" in t}
    return out


# --- the commands ------------------------------------------------------------------------------

def _make_models(names: list[str], seed: int, params: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The run's models, each seeded with the run's seed (unless --param sets its seed) and made
    with its --param values. The stack routes over the other models of the run and is learned from the fits they already
    make; random is a sanity line, not a candidate."""
    from thaw.registry import make_model

    models = {n: make_model(n, **{"seed": seed, **params.get(n, {})}) for n in names if not _is_stack(n)}
    members = [m for n, m in models.items() if n != "random"]
    for stack in (n for n in names if _is_stack(n)):
        models[stack] = make_model(stack, members=members, **{"seed": seed, **params.get(stack, {})})
    return models


_shown: set[str] = set()


def _show_warning(message: Any, category: Any = None, filename: Any = None, lineno: Any = None,
                  file: Any = None, line: Any = None) -> None:
    """Every warning as one line on stderr, each text once per command."""
    text = str(message)
    if text not in _shown:
        _shown.add(text)
        typer.secho(f"warning: {text}", fg=typer.colors.YELLOW, err=True)


def _echo_warnings(notes: list[str]) -> None:
    for note in notes:
        _show_warning(note)


def _check_data(data: Any, protocols: list[str]) -> None:
    """Data whose numbers would mean nothing, refused or named before any model is fitted: a
    catalogue of one item (no negative to rank the target against: every metric is perfect),
    and, for the rating protocol, ratings below 0 (its NDCG gain, 2^rating - 1, turns negative)."""
    if data.n_items < 2:
        raise ThawError(f"'{data.name}' has {data.n_items} item(s): thaw ranks a target among other items, "
                        "so every metric would be perfect; give a data set with two or more items")
    ratings = data.interactions.rating
    if "rating" in protocols and len(ratings) and ratings.min() < 0:
        warnings.warn(f"'{data.name}' has ratings below 0 (down to {ratings.min():g}): the rating protocol's "
                      "NDCG weighs each item by 2^rating - 1, which is negative there, so its NDCG is not "
                      "on the usual 0-1 scale (MAE and RMSE are unaffected); shift the ratings to start at 0 "
                      "or above to compare it", stacklevel=2)


def _warn_missing_text(data: Any, names: list[str]) -> None:
    """The content models rank by popularity when no item has text: say so once."""
    from thaw.data.features import item_documents

    if "content" in names and not any(d.strip() for d in item_documents(data)):
        warnings.warn("content: the items have no text (no title, genres or year), so it ranks by "
                      "popularity", stacklevel=2)
    if "content-minilm" in names:
        from thaw.models.content import item_texts

        if not any(t.strip() for t in item_texts(data)):
            warnings.warn("content-minilm: the items have no text (no title, genres, year or "
                          "description), so it ranks by popularity", stacklevel=2)


@app.command()
def evaluate(
    ctx: typer.Context,
    dataset: Annotated[str | None, typer.Option(help="Data set name (see `thaw datasets`) or a path to RecBole atomic files, CSV or Parquet.")] = None,
    models: Annotated[str, typer.Option(help="Comma-separated model names (see `thaw models`), or 'all'.")] = "all",
    protocol: Annotated[str, typer.Option(help="next-item (rank the K+1-th among 100 negatives) or rating (predict the query's ratings).")] = "next-item",
    ks: Annotated[str, typer.Option(help="Support sizes K to stratify by (0: a profile and no history).")] = "0,1,3,5,10",
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("results"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    split: Annotated[Path | None, typer.Option(help="External split folder (interactions.csv with role column, optional negatives.csv), used exactly as given.")] = None,
    split_kind: Annotated[str, typer.Option(help="new-user, new-item, both, temporal or warm (ignored with --split).")] = "new-user",
    item_strata: Annotated[str, typer.Option(help="new-item and both: training interactions a held-out item may keep (results by item stratum N).")] = "0",
    candidates: Annotated[str, typer.Option(help="sampled (target + 100 negatives) or full (target + every item the user never interacted with).")] = "sampled",
    test_frac: Annotated[float, typer.Option(help="Fraction of users (or items) held out for testing.")] = 0.2,
    val_frac: Annotated[float, typer.Option(help="Fraction held out for validation (model selection only).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the split, negatives, models and bootstrap (0 or more).")] = 0,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% intervals (1 or more).")] = 1000,
    columns: Annotated[str | None, typer.Option(help="Column mapping for CSV/Parquet, e.g. user=uid,item=iid,rating=stars,ts=time.")] = None,
    rating_scale: Annotated[str | None, typer.Option(help=RATING_SCALE_HELP)] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    jobs: Annotated[int | None, typer.Option(help=JOBS_HELP, show_default=False)] = None,
    compare: Annotated[str | None, typer.Option(help=COMPARE_HELP)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="MODEL.NAME=VALUE", help=PARAM_HELP)] = None,
    nproc: Annotated[int, typer.Option(help=NPROC_HELP + " Each process fits its share of the models.")] = 1,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Fit models on training users and evaluate them on held-out users, stratified by K."""
    from thaw.data.splits import SPLIT_KINDS, make_split, read_split_folder
    from thaw.eval.episodes import PROTOCOLS

    _check_choice(protocol, PROTOCOLS, "protocol")
    _check_choice(candidates, ("sampled", "full"), "candidates")
    _check_common(seed, jobs, bootstrap)
    ks_tuple = _parse_ks(ks)
    strata = _parse_ks(item_strata, "item-strata")
    if split is None:
        _check_choice(split_kind, SPLIT_KINDS, "split-kind")
        _check_fractions(test_frac, val_frac)
    pairs = _parse_pairs(compare)
    params = _parse_params(param)
    names = _model_list(models)
    _check_models(names, pairs, params)
    mapping, scale = _parse_columns(columns), _parse_scale(rating_scale)
    settings = _settings(ctx)
    previous = _check_out(out, settings, overwrite)
    if split is not None:
        data = _load(dataset, mapping, scale) if dataset is not None else None
        the_split = read_split_folder(split, data, seed=seed)
    else:
        data = _load(dataset or DEFAULT_DATASET, mapping, scale)
        the_split = make_split(data, split_kind, test_frac=test_frac, val_frac=val_frac, seed=seed,
                               item_strata=strata)
    _check_data(the_split.train, [protocol])
    _warn_missing_text(the_split.train, names)
    _launch(nproc, device)
    _run([protocol], [(the_split, names)], ks_tuple, candidates, out, seed, bootstrap, progress,
         jobs, pairs=pairs, params=params, settings=settings, previous=previous)


@app.command()
def run(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Option(help="Data set to run on.")] = DEFAULT_DATASET,
    out: Annotated[Path, typer.Option(help=OUT_HELP)] = Path("results"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help=OVERWRITE_HELP)] = False,
    models: Annotated[str, typer.Option(help="Comma-separated model names, or 'all'.")] = "all",
    seed: Annotated[int, typer.Option(help="Seed for everything random (0 or more).")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    jobs: Annotated[int | None, typer.Option(help=JOBS_HELP, show_default=False)] = None,
    compare: Annotated[str | None, typer.Option(help=COMPARE_HELP)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="MODEL.NAME=VALUE", help=PARAM_HELP)] = None,
    nproc: Annotated[int, typer.Option(help=NPROC_HELP + " Each process fits its share of the models.")] = 1,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """thaw's main job: every model and the stack, new users, new items and both, both protocols.

    The new-user split at K = 0, 1, 3, 5, 10 with every model and the stack over them; then the
    models chosen among those that can score new items (`thaw models --abilities`) on the
    new-item and both-cold splits, item strata N = 0, 1, 3, 5, 10."""
    from thaw.data.splits import make_split

    _check_common(seed, jobs)
    pairs = _parse_pairs(compare)
    params = _parse_params(param)
    names = _model_list(models)
    _check_models(names, pairs, params)
    settings = _settings(ctx)
    previous = _check_out(out, settings, overwrite)
    data = _load(dataset, None, None)
    _check_data(data, ["next-item", "rating"])
    _warn_missing_text(data, names)
    _launch(nproc, device)
    if "stack" in names:
        # The stack's out-of-fold fits, sized for the main job's time on two cores: three folds
        # of the six members best on validation (plus the fallback and content).
        params["stack"] = {**MAIN_JOB_STACK, **params.get("stack", {})}
    runs = [(make_split(data, "new-user", seed=seed), names)]
    item_names = _item_cold_names(names)
    for kind in ("new-item", "both"):
        if item_names:
            runs.append((make_split(data, kind, seed=seed, item_strata=ITEM_STRATA), item_names))
    _run(["next-item", "rating"], runs, (0, 1, 3, 5, 10), "sampled", out, seed, 1000, progress, jobs,
         pairs=pairs, params=params, settings=settings, previous=previous)


def _item_cold_names(names: list[str]) -> list[str]:
    """The main job's models for its new-item and both-cold runs, of ``names``: those whose
    class can score an item nobody has rated and is chosen for those runs (the flags on
    ``Recommender``), so that a new model or an ablation does not lengthen the job unasked."""
    from thaw.registry import model_class

    return [n for n in names if model_class(n).scores_new_items and model_class(n).main_job_item_cold]


def _launch(nproc: int, device: str) -> None:
    """Train on ``device``; with ``nproc`` > 1, rerun this very command under torchrun (one
    machine, a free port) and exit with its status. Under torchrun, join the process group;
    ranks other than 0 print nothing to stdout (rank 0 writes the logs and every file)."""
    if nproc < 1:
        raise ThawError(f"--nproc must be at least 1, not {nproc}")
    os.environ["THAW_DEVICE"] = device
    from thaw.compute import training_device

    training_device()  # an unknown or missing device fails here, before any work
    from thaw import distributed

    if nproc > 1 and not distributed.launched():
        import subprocess

        args, skip = [], False
        for arg in sys.argv[1:]:  # this command again, without --nproc
            if skip or arg.startswith("--nproc="):
                skip = False
                continue
            if arg == "--nproc":
                skip = True
                continue
            args.append(arg)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={nproc}", "-m", "thaw", *args]
        raise SystemExit(subprocess.call(launcher))
    distributed.start(device)
    if not distributed.is_main():
        sys.stdout = open(os.devnull, "w")  # for the life of the process


def _load(dataset: str, columns: dict[str, str] | None, scale: tuple[float, float] | None):
    from thaw.data.loaders import load_dataset

    return load_dataset(dataset, columns=columns, rating_scale=scale)


def _model_list(text: str, two_domains: bool = False) -> list[str]:
    from thaw.registry import CROSS_DOMAIN, NAMED_ONLY, model_class, model_names

    known = model_names()
    names = ([n for n in known if n not in CROSS_DOMAIN and n not in NAMED_ONLY] if text.strip() == "all"
             else _csv_list(text, "models"))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ThawError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    two_domain = [n for n in names if model_class(n).needs_source]
    if two_domain and not two_domains:
        raise ThawError(f"{', '.join(two_domain)} transfer from a second domain, which this data "
                        "set does not have: use `thaw transfer` (e.g. `thaw transfer ml-1m:drama-comedy`)")
    return names


def _run(protocols: list[str], runs: list[tuple], ks: tuple[int, ...], candidates: str,
         out: Path, seed: int, bootstrap: int, progress: bool, jobs: int | None,
         pairs: list[tuple[str, str]] | None = None,
         params: Mapping[str, Mapping[str, Any]] | None = None,
         settings: Mapping[str, Any] | None = None, previous: Mapping[str, Any] | None = None) -> None:
    """Evaluate each (split, model names) under each protocol, print the tables, write results.
    ``pairs`` (from --compare) are tested in every run that has both models; ``params`` (from
    --param) go to the models they name, and every model's seed is ``seed``."""
    from thaw.eval.protocol import DegenerateResultWarning, evaluate
    from thaw.eval.report import format_tables, write_results
    from thaw.models.base import ModelSelectionSkipped

    params = dict(params or {})
    jobs = jobs or _auto_jobs()
    seconds = _previous_seconds(previous)
    results = []
    for the_split, names in runs:
        typer.echo(the_split.describe())
        for protocol in protocols:
            models = _make_models(names, seed, params)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DegenerateResultWarning)  # in result.warnings
                warnings.simplefilter("ignore", ModelSelectionSkipped)  # in result.warnings too
                result = evaluate(models, the_split, protocol=protocol, ks=ks, candidates=candidates,
                                  n_bootstrap=bootstrap, seed=seed, progress=progress, jobs=jobs,
                                  pairs=None if pairs is None else
                                  [p for p in pairs if set(p) <= set(models)],
                                  expected_seconds=seconds.get((the_split.kind, protocol)),
                                  min_users=FEW_TEST_USERS)
            typer.echo(format_tables(result))
            typer.echo("\nfit seconds: " + ", ".join(
                f"{m} {s:.1f}" for m, s in zip(result.timings["model"], result.timings["fit_seconds"], strict=True)))
            _echo_warnings(result.warnings)
            results.append(result)
    from thaw import distributed

    if not distributed.is_main():  # every rank holds the same results; rank 0 writes them
        return
    paths = write_results(results, out, seed=seed, command=["thaw", *sys.argv[1:]], params=params,
                          settings=settings)
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths.values())}")


@app.command()
def fit(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Model to fit (see `thaw models`); 'stack' routes over --members.")] = "stack",
    out: Annotated[Path, typer.Option(help="Folder the fitted model is saved to (JSON + safetensors): a new or empty one, or one this command wrote with the same settings (a rerun replaces it); another model needs --overwrite.")] = Path("models/stack"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a model that another command saved in --out.")] = False,
    dataset: Annotated[str, typer.Option(help="Data set name or path (see `thaw datasets`), or a cross-domain pair (ml-1m:drama-comedy, ...: the stack then transfers from its source domain).")] = DEFAULT_DATASET,
    members: Annotated[str | None, typer.Option(help="The stack's members, comma-separated (default: a set that covers every K).")] = None,
    protocol: Annotated[str, typer.Option(help="What to fit for: next-item (ranking) or rating.")] = "next-item",
    val_frac: Annotated[float, typer.Option(help="Fraction of users held out for validation (model selection, the stack's routing).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed for the validation users and the models (0 or more).")] = 0,
    columns: Annotated[str | None, typer.Option(help="Column mapping for CSV/Parquet, e.g. user=uid,item=iid.")] = None,
    rating_scale: Annotated[str | None, typer.Option(help=RATING_SCALE_HELP)] = None,
    param: Annotated[list[str] | None, typer.Option("--param", metavar="MODEL.NAME=VALUE", help=PARAM_HELP.replace(" Recorded in results.json.", ""))] = None,
    nproc: Annotated[int, typer.Option(help=NPROC_HELP)] = 1,
    device: Annotated[str, typer.Option(help=DEVICE_HELP)] = "cpu",
) -> None:
    """Fit one model on every user but the validation users and save it for `thaw recommend`."""
    from thaw.data.splits import make_split
    from thaw.eval.episodes import PROTOCOLS
    from thaw.eval.protocol import SplitValidator
    from thaw.persist import save
    from thaw.registry import make_model
    from thaw.stack.router import DEFAULT_MEMBERS

    _check_choice(protocol, PROTOCOLS, "protocol")
    _check_common(seed, None)
    if not 0 < val_frac < 1:
        raise ThawError("--val-frac must be a fraction between 0 and 1: validation users choose "
                        "the models' settings and the stack's routes")
    from thaw.eval.cross_domain import TRANSFER_MEMBERS
    from thaw.transfer.data import BUILT_IN

    two_domains = dataset in BUILT_IN  # a cross-domain pair: the stack gets the transfer members
    name = _model_list(model, two_domains)[0]
    params = _parse_params(param)
    defaults = TRANSFER_MEMBERS if two_domains else DEFAULT_MEMBERS
    member_names = (_model_list(members, two_domains) if members else list(defaults)) if _is_stack(name) else []
    _check_params(params, [name, *member_names])
    mapping, scale = _parse_columns(columns), _parse_scale(rating_scale)
    settings = _settings(ctx)
    _check_out(out, settings, overwrite, kind="model")
    _launch(nproc, device)
    if two_domains:
        from thaw.transfer.data import cross_domain_split, load_cross_domain

        the_split = cross_domain_split(load_cross_domain(dataset), 0.0, val_frac=val_frac, seed=seed)
    else:
        data = _load(dataset, mapping, scale)
        _check_data(data, [protocol])
        _warn_missing_text(data, [name, *member_names])
        the_split = make_split(data, "new-user", test_frac=0.0, val_frac=val_frac, seed=seed)
    typer.echo(the_split.describe())
    # A seed set with --param wins over --seed; stack members are made here, so that --param
    # reaches them too.
    made = {m: make_model(m, **{"seed": seed, **params.get(m, {})}) for m in member_names}
    if name == "stack":  # its out-of-fold fits in worker processes, as an evaluation's fits
        params["stack"] = {"jobs": _auto_jobs(), **params.get("stack", {})}
    the_model = make_model(name, **{"seed": seed, **params.get(name, {})},
                           **({"members": list(made.values())} if _is_stack(name) else {}))
    the_model.set_task(protocol)
    the_model.fit(the_split.train, validate=SplitValidator(the_split, protocol))
    # The data set goes with it, so ids and titles resolve after loading and `thaw retrain`
    # starts from every user's interactions: the validation users' too (they chose settings
    # and were never trained on; dropping them would lose them at the first retrain). A
    # cross-domain split keeps its training side, which carries the source domain.
    the_model.dataset = the_split.train if two_domains else data
    from thaw import distributed

    if not distributed.is_main():
        return
    path = save(the_model, out, {"command": "thaw " + " ".join(sys.argv[1:]), "settings": settings})
    if _is_stack(name):
        typer.echo(the_model.explain())
    typer.echo(f"saved {name} to {path}")


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="A folder written by `thaw fit`.")],
    history: Annotated[list[str] | None, typer.Option(help="Items the user interacted with, oldest first, as the data set names them, comma-separated or the option repeated; a value that names one item whole is that item, commas and all (--history 'Godfather, The (1972)'). None: a brand-new user.")] = None,
    ratings: Annotated[str | None, typer.Option(help="Their ratings, comma-separated (default: the data set's mean rating).")] = None,
    profile: Annotated[str, typer.Option(help="Side features, e.g. gender=F,age=25.")] = "",
    n: Annotated[int, typer.Option("-n", "--n", help="How many items to recommend.")] = 10,
) -> None:
    """Recommend items to one user from their history and profile, with titles and scores."""
    import numpy as np

    from thaw.models.base import Context, top_n
    from thaw.persist import load

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


def _history(data, texts: list[str] | None, ratings: str | None):
    from thaw.data.schema import Interactions

    names = set(data.item_ids.astype(str))
    raw = [name for text in texts or [] for name in
           ([text.strip()] if text.strip() in names else [t.strip() for t in text.split(",") if t.strip()])]
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
    import pandas as pd

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
        out[key.strip()] = _known_value(key.strip(), value, column)
    return out


def _known_value(key: str, value: Any, column: Any) -> Any:
    """``value`` as the data set spells it when only its case differs (gender=f -> F); a value
    no user has (gender=Q, age=-5, age=nan) is kept, with a warning naming it, since models
    treat it as unknown (segment-pop then ranks by global popularity)."""
    import math

    seen = column.dropna()
    if isinstance(value, float):
        if len(seen) and not (math.isfinite(value) and seen.min() <= value <= seen.max()):
            warnings.warn(f"--profile {key}={value:g} is outside the data set's {key} values ({seen.min():g} to "
                          f"{seen.max():g}): models treat it as unknown, so answers fall back to "
                          "what fits everyone (global popularity for segment-pop)", stacklevel=2)
        return value
    values = sorted({str(v) for v in seen})
    if value in values or not values:
        return value
    same = [v for v in values if v.lower() == value.lower()]
    if len(same) == 1:
        return same[0]
    warnings.warn(f"--profile {key}={value}: no user of the data set has that {key} (its values: "
                  f"{', '.join(values[:10])}{', ...' if len(values) > 10 else ''}): models treat it as "
                  "unknown, so answers fall back to what fits everyone (global popularity for "
                  "segment-pop)", stacklevel=2)
    return value


stack_app = typer.Typer(help="Inspect a fitted stack.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


@stack_app.command("explain")
def stack_explain(model_dir: Annotated[Path, typer.Argument(help="A folder written by `thaw fit --model stack`.")]) -> None:
    """Print the routing table a stack learned: band, choice, weights, validation metrics."""
    from thaw.persist import load

    model = load(model_dir)
    if not hasattr(model, "explain"):
        raise ThawError(f"{model_dir} holds a '{model.name}' model, not a stack")
    typer.echo(model.explain())


@app.command()
def datasets() -> None:
    """List the data sets thaw can load and where each would come from."""
    from thaw.data.loaders import available_datasets
    from thaw.transfer.data import BUILT_IN, GENRE_PAIRS

    for info in available_datasets():
        typer.echo(f"{info.name:10s} {info.description}\n{'':10s} {info.location}")
    typer.echo("\ncross-domain pairs (`thaw transfer PAIR`, `thaw fit --dataset PAIR`), cut from the above by genre:")
    for name in BUILT_IN:
        source, target = GENRE_PAIRS[name.partition(":")[2]]
        typer.echo(f"  {name:22s} {'/'.join(source)} -> {'/'.join(target)}")


@app.command()
def models(
    abilities: Annotated[bool, typer.Option("--abilities", help="Say after each name what the model can do (imports every model, so it takes a few seconds).")] = False,
) -> None:
    """Print the name of every model thaw has, one per line."""
    from thaw.registry import model_names

    for name in model_names():
        typer.echo(f"{name:20s} {', '.join(_abilities(name))}".rstrip() if abilities else name)


def _abilities(name: str) -> list[str]:
    """What the class of model ``name`` says it can do, in words (its flags on ``Recommender``)."""
    import inspect

    from thaw.registry import NAMED_ONLY, model_class

    cls = model_class(name)
    rates = inspect.getattr_static(cls, "predicts_ratings")
    said = {"scores new items": cls.scores_new_items,
            "predicts ratings" + (" when fitted for them" if isinstance(rates, property) else ""): rates,
            "needs a source domain": cls.needs_source,
            "in the main job's new-item runs": cls.main_job_item_cold,
            "runs only where named ('all' leaves it out)": name in NAMED_ONLY}
    return [words for words, flag in said.items() if flag]


# --- the entry point ---------------------------------------------------------------------------

class Stopped(BaseException):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP. A BaseException, so no
    ``except Exception`` swallows it on its way out while ``finally`` blocks (temporary
    folders, worker processes) still run."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # one stop; cleanup runs in peace
        signal.signal(stop, signal.SIG_IGN)
    raise Stopped(signum)


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2, and a stop
    signal into one line and exit status 128 + the signal number (Ctrl-C: 130)."""
    atexit.register(_exit_at_once)  # before any module that registers its own: it runs last
    errors.INTERFACE = "cli"
    warnings.showwarning = _show_warning
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, _on_signal)
    try:
        app()
    except ThawError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except Stopped as stop:
        typer.secho("interrupted" if stop.signum == signal.SIGINT else
                    f"stopped by {signal.Signals(stop.signum).name}", err=True)
        global _stopped_with
        _stopped_with = 128 + stop.signum
        sys.exit(_stopped_with)


_stopped_with: int | None = None


def _exit_at_once() -> None:
    """The last exit handler: after a stop signal (workers stopped, temporary folders gone,
    multiprocessing's own handlers run), skip the seconds of tearing down torch and the rest."""
    if _stopped_with is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_stopped_with)


if __name__ == "__main__":
    main()
