"""``thaw transfer``: the cross-domain protocol from the command line (registered lazily by
thaw/cli.py). User mistakes raise ThawError, which the CLI prints as one line."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from thaw.errors import ThawError

if TYPE_CHECKING:
    from thaw.eval.protocol import EvalResult


def transfer(
    pair: Annotated[str | None, typer.Argument(help="A built-in pair (ml-1m:drama-comedy, ml-1m:action-drama, ml-100k:drama-comedy, ml-100k:action-drama); or give --source and --target.")] = None,
    source: Annotated[Path | None, typer.Option(help="Your own pair: the source domain's interactions (CSV/TSV/Parquet/.inter).")] = None,
    target: Annotated[Path | None, typer.Option(help="Your own pair: the target domain's interactions, same user ids as --source.")] = None,
    beta: Annotated[float | None, typer.Option(help="Fraction of the users in both domains made cold in the target (test users); default 0.2.", show_default=False)] = None,
    val_frac: Annotated[float | None, typer.Option(help="Fraction of them held out the same way for model selection; default 0.1.", show_default=False)] = None,
    roles: Annotated[Path | None, typer.Option(help="Given roles instead of drawn ones: a CSV file with the header user,role and a line per user (train, val or test; a user in both domains not named trains). Not with --beta or --val-frac.")] = None,
    protocol: Annotated[str, typer.Option(help="rating (MAE, RMSE) or next-item (NDCG@10, ...).")] = "rating",
    ks: Annotated[str, typer.Option(help="Target support sizes K (0 = source history only).")] = "0,1,3,5,10",
    permute: Annotated[bool, typer.Option(help="The control: source histories permuted across users (must trip the alarm).")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the result files.")] = Path("results-transfer"),
    seed: Annotated[int, typer.Option(help="Seed of the split and the models.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Evaluate cross-domain transfer (EMCDR, PTUPCDR, ...) for users cold in a target domain.

    tgt, cmf, emcdr, ptupcdr and the stack, with random and pop, K-stratified on the target;
    warns wherever transfer is significantly worse than tgt."""
    from thaw.eval.cross_domain import NegativeTransferWarning, evaluate_transfer
    from thaw.eval.episodes import PROTOCOLS
    from thaw.eval.protocol import DegenerateResultWarning
    from thaw.eval.report import format_tables, write_results
    from thaw.transfer.data import cross_domain_split, from_files, load_cross_domain, permuted_source, read_roles

    if protocol not in PROTOCOLS:
        raise ThawError(f"--protocol {protocol}: choose one of {', '.join(PROTOCOLS)}")
    try:
        k_values = tuple(sorted({int(k) for k in ks.split(",") if k.strip()}))
    except ValueError:
        raise ThawError(f"--ks {ks}: give whole numbers separated by commas, e.g. 0,1,3,5,10") from None
    if not k_values or k_values[0] < 0:
        raise ThawError(f"--ks {ks}: give non-negative whole numbers, e.g. 0,1,3,5,10")
    if roles is not None and (beta is not None or val_frac is not None):
        raise ThawError("--roles says who is held out: give it without --beta and --val-frac")
    if beta is not None and not 0 < beta < 1:
        raise ThawError(f"--beta {beta:g}: the cold fraction of the users in both domains must be above 0 and below 1")
    if roles is not None:
        read_roles(roles)  # the file's own mistakes before any work; its users are checked below
    if (pair is None) == (source is None and target is None):
        raise ThawError("name a built-in pair, or give --source and --target (not both)")
    if pair is None and (source is None or target is None):
        raise ThawError("your own pair needs both --source and --target")
    data = load_cross_domain(pair) if pair is not None else from_files(source, target)
    if permute:
        data = permuted_source(data, seed=seed)
    typer.echo(data.summary())
    split = cross_domain_split(data, beta, val_frac=val_frac, seed=seed, roles=roles)
    typer.echo(split.describe())
    with warnings.catch_warnings():
        for category in (DegenerateResultWarning, NegativeTransferWarning):
            warnings.simplefilter("ignore", category)  # both land in result.warnings, printed below
        result = evaluate_transfer(split, protocol=protocol, ks=k_values, seed=seed, progress=progress)
    typer.echo(format_tables(result))
    typer.echo(pooled_tables(result))
    typer.echo("\nfit seconds: " + ", ".join(
        f"{m} {s:.1f}" for m, s in zip(result.timings["model"], result.timings["fit_seconds"], strict=True)))
    typer.echo("\n" + result.meta["stacks"]["stack"]["explain"])
    for note in result.warnings:
        typer.echo(f"warning: {note}", err=True)
    if not result.meta["negative_transfer"]:
        typer.echo("\nno negative transfer: no transfer model is significantly worse than tgt anywhere")
    paths = write_results([result], out, seed=seed, command=["thaw", *sys.argv[1:]],
                          title=f"thaw transfer: {data.name}")
    typer.echo(f"\nwrote {', '.join(str(p) for p in paths.values())}")


def pooled_tables(result: EvalResult) -> str:
    """The pooled MAE and RMSE by K (rating protocol; nothing otherwise), as plain tables."""
    from thaw.eval.cross_domain import POOLED
    from thaw.eval.report import wide_table

    lines = []
    for metric in POOLED.values():
        if metric in set(result.table["metric"]):
            lines += [f"\n{metric} (lower is better) by K: over every query rating at once, as the "
                      "papers report it (a user with more ratings counts more; the tables above are "
                      "means over users; 95% intervals in results.csv)",
                      "  " + wide_table(result, metric).round(3).to_string().replace("\n", "\n  ")]
    return "\n".join(lines)
