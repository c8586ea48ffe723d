"""Command-line entry points ``bandit-sim`` and ``bandit-replay`` (plain functions; the main typer
app registers them). User mistakes raise ThawError, which the CLI prints as one line."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from thaw.bandits.features import ProfileFeatures, TableEncoder, VectorFeatures
from thaw.bandits.offline import BanditLog, ItemMeanReward, off_policy_estimates, read_log_csv, replay
from thaw.bandits.simulate import (
    POLICY_NAMES,
    BanditWorld,
    make_policy,
    ml100k_world,
    parse_policies,
    plot_regret,
    simulate,
    synthetic_world,
)
from thaw.errors import ThawError


def _versions() -> dict[str, str]:
    import matplotlib
    import scipy
    return {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "matplotlib": matplotlib.__version__}


def _world(dataset: str, n_items: int, holdout_frac: float, world_seed: int) -> BanditWorld:
    if dataset == "synthetic":
        return synthetic_world(seed=world_seed)
    from thaw.data.loaders import load_dataset
    data = load_dataset(dataset)
    return ml100k_world(data, n_items=n_items, holdout_frac=holdout_frac, seed=world_seed)


def bandit_sim(
    dataset: Annotated[str, typer.Option(help="Data set for the simulator (ml-100k), or 'synthetic'.")] = "ml-100k",
    policies: Annotated[str, typer.Option(help=f"Comma-separated policies: {', '.join(POLICY_NAMES)} "
                                               "(also linucb-joined, lints-joined).")] = ",".join(POLICY_NAMES),
    horizon: Annotated[int, typer.Option(help="Rounds per run.")] = 10_000,
    seeds: Annotated[int, typer.Option(help="Runs per policy (seeds 0..N-1); bands are 95% over seeds.")] = 5,
    out: Annotated[Path, typer.Option(help="Folder for regret.csv, regret.png and summary.json.")] = Path("results/bandit-sim"),
    n_items: Annotated[int, typer.Option(help="Catalogue: this many most-rated items (ML-100k).")] = 300,
    holdout_frac: Annotated[float, typer.Option(help="Share of users held out to arrive in the simulation.")] = 0.2,
    world_seed: Annotated[int, typer.Option(help="Seed of the held-out users (and synthetic world).")] = 0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Simulate bandit policies on a data set and write their cumulative regret (CSV and PNG)."""
    names = parse_policies(policies)
    if horizon < 1:
        raise ThawError(f"--horizon must be at least 1, got {horizon}")
    if seeds < 1:
        raise ThawError(f"--seeds must be at least 1, got {seeds}")
    from thaw.cli import check_writable

    check_writable(out)
    world = _world(dataset, n_items, holdout_frac, world_seed)
    factories = {name: (lambda s, name=name: make_policy(name, world, s)) for name in names}
    result = simulate(world, factories, horizon, list(range(seeds)), progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    table = result.table()
    table.to_csv(out / "regret.csv", index=False)
    plot_regret(table, str(out / "regret.png"),
                title=f"Cumulative regret, {dataset} ({seeds} seeds, 95% bands)")
    summary = {
        "command": " ".join(["thaw"] + sys.argv[1:]) if sys.argv else "",
        "dataset": dataset, "policies": names, "horizon": horizon, "seeds": result.seeds,
        "world": world.description, "world_info": world.info,
        "final_regret": {n: dict(zip(("mean", "low", "high"), _band(result.regret[n][:, -1]), strict=False))
                         for n in names},
        "decisions_per_second": {n: float(np.mean(v)) for n, v in result.decisions_per_second.items()},
        "versions": _versions(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _print_table(pd.DataFrame([{"policy": n, "regret": f"{summary['final_regret'][n]['mean']:.1f}",
                                "95% band": f"{summary['final_regret'][n]['low']:.1f}..{summary['final_regret'][n]['high']:.1f}",
                                "decisions/s": f"{summary['decisions_per_second'][n]:.0f}"} for n in names]),
                 f"Cumulative regret at T={horizon} ({world.description})")
    typer.echo(f"wrote {out / 'regret.csv'}, {out / 'regret.png'}, {out / 'summary.json'}")


def bandit_replay(
    log: Annotated[Path, typer.Option(help="Logged events CSV: item, reward [, user, propensity, candidates, x_*].")],
    policies: Annotated[str, typer.Option(help="Comma-separated policies to evaluate.")] = ",".join(POLICY_NAMES),
    dataset: Annotated[str | None, typer.Option(help="Data set whose ids and user profiles the log uses.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every policy.")] = 0,
    train_frac: Annotated[float, typer.Option(help="For IPS/SNIPS/DR: share of the log a policy learns from "
                                                   "(by replay) before it is frozen and evaluated on the rest.")] = 0.5,
    out: Annotated[Path | None, typer.Option(help="Folder for replay.csv (optional).")] = None,
) -> None:
    """Evaluate bandit policies offline on a log: replay (uniform logs) and IPS/SNIPS/DR (any logged propensities)."""
    import warnings

    from thaw.bandits.offline import NonUniformLoggingWarning

    names = parse_policies(policies)
    if not 0.0 <= train_frac < 1.0:
        raise ThawError(f"--train-frac must be in [0, 1), got {train_frac}")
    if out is not None:
        from thaw.cli import check_writable

        check_writable(out)
    data = None
    if dataset is not None:
        from thaw.data.loaders import load_dataset
        data = load_dataset(dataset)
    events, _ = read_log_csv(log, data)
    features = _log_features(events, data)
    world = BanditWorld(np.zeros((1, 1)), np.zeros(1, dtype=np.int64), [events.context(0)], user_features=features)
    rows = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonUniformLoggingWarning)
        for name in names:
            result = replay(make_policy(name, world, seed), events)
            row = {"policy": name, "replay": result.value, "replay_low": result.estimate.low,
                   "replay_high": result.estimate.high, "matched": result.matched, "events": result.n_events}
            if events.propensities is not None:
                cut = int(round(train_frac * len(events)))
                policy = make_policy(name, world, seed)
                if cut > 0:
                    replay(policy, events.take(np.arange(cut)), warn=False)
                test = events.take(np.arange(cut, len(events)))
                est = off_policy_estimates(policy, test, reward_model=ItemMeanReward().fit(test))
                for key, e in est.items():
                    row[key] = e.value
                    row[f"{key}_se"] = e.se
            rows.append(row)
    for w in caught:
        if issubclass(w.category, NonUniformLoggingWarning):
            typer.echo(f"warning: {w.message}", err=True)
            break
    frame = pd.DataFrame(rows)
    typer.echo(f"logging policy's own mean reward: {events.rewards.mean():.4f} over {len(events)} events")
    _print_table(frame.round(4), f"Offline evaluation of {log}")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / "replay.csv", index=False)
        typer.echo(f"wrote {out / 'replay.csv'}")


def _log_features(events: BanditLog, data) -> VectorFeatures | ProfileFeatures:  # noqa: ANN001
    """Context features for the linear policies: the log's x_* columns, else data set profiles, else a bias."""
    if events.contexts is not None:
        return VectorFeatures(len(events.contexts[0].profile["x"]))
    if data is not None and len(data.user_features.columns):
        cols = [c for c in ("gender", "age", "occupation") if c in data.user_features.columns] or None
        return ProfileFeatures(TableEncoder.fit(data.user_features, columns=cols))
    return ProfileFeatures(TableEncoder([], bias=True))


def _band(values: np.ndarray) -> tuple[float, float, float]:
    from thaw.bandits.simulate import mean_band
    return mean_band(values)


def _print_table(frame: pd.DataFrame, title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        typer.echo(title)
        typer.echo(frame.to_string(index=False))
        return
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col))
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    Console().print(table)
