"""Regret and speed of every bandit policy on the ML-100k simulator, side by side in one run.

    .venv/bin/python benchmarks/bandits.py --horizon 100000 --seeds 5 --out results/bandits

Prints a Markdown table: cumulative regret at T = 1,000 / 10,000 / 100,000 (those within the
horizon), mean over seeds with a 95% t-interval, and decisions per second (select + update
time only, mean over seeds). The ML-100k world is a simulation (see
``thaw.bandits.simulate.ml100k_world``). Also writes regret.csv, regret.png, summary.json and
table.md to --out.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # tiny matrices: one BLAS thread is fastest
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from thaw.bandits.simulate import (  # noqa: E402
    EXTRA_POLICY_NAMES,
    POLICY_NAMES,
    best_fixed_item_regret,
    make_policy,
    mean_band,
    ml100k_world,
    parse_policies,
    plot_regret,
    simulate,
    synthetic_world,
)

CHECKPOINTS = (1_000, 10_000, 100_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=100_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--policies", default=",".join(POLICY_NAMES + EXTRA_POLICY_NAMES))
    parser.add_argument("--dataset", default="ml-100k", help="ml-100k or synthetic")
    parser.add_argument("--n-items", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path("results/bandits"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()

    names = parse_policies(args.policies)
    start = time.perf_counter()
    world = synthetic_world() if args.dataset == "synthetic" else ml100k_world(n_items=args.n_items)
    build_s = time.perf_counter() - start
    print(f"world: {world.description}")
    print(f"world info: {json.dumps(world.info)}  (built in {build_s:.1f} s)")
    args.out.mkdir(parents=True, exist_ok=True)
    # One policy at a time, saving as we go, so a run cut short still leaves every finished policy.
    result = None
    start = time.perf_counter()
    for n in names:
        part = simulate(world, {n: lambda s, n=n: make_policy(n, world, s)}, args.horizon,
                        list(range(args.seeds)), progress=not args.no_progress)
        if result is None:
            result = part
        else:
            result.regret.update(part.regret)
            result.decisions_per_second.update(part.decisions_per_second)
        result.table().to_csv(args.out / "regret.csv", index=False)
        print(f"{n}: regret {part.regret[n][:, -1].mean():.1f} at T={args.horizon}, "
              f"{np.mean(part.decisions_per_second[n]):.0f} decisions/s", flush=True)
    run_s = time.perf_counter() - start

    ts = [t for t in CHECKPOINTS if t <= args.horizon]
    if args.horizon not in ts:
        ts.append(args.horizon)
    header = "| policy | " + " | ".join(f"regret @ T={t:,}" for t in ts) + " | decisions/s |"
    lines = [header, "|" + "---|" * (len(ts) + 2)]
    for n in names:
        cells = []
        for t in ts:
            mean, low, high = mean_band(result.regret[n][:, t - 1])
            cells.append(f"{mean:,.0f} [{low:,.0f}, {high:,.0f}]")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {np.mean(result.decisions_per_second[n]):,.0f} |")
    table = "\n".join(lines)
    machine = (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or 'unknown processor'}), "
               f"Python {platform.python_version()}, numpy {np.__version__}")
    print()
    print(table)
    print(f"\n{args.seeds} seeds (0..{args.seeds - 1}), 95% t-intervals over seeds; "
          f"simulation took {run_s:.0f} s on {machine}")
    last = min(10_000, args.horizon - 1)
    if last > 0:
        slopes = {n: float(np.mean((result.regret[n][:, -1] - result.regret[n][:, -1 - last]) / last))
                  for n in names}
        print(f"\nregret per round over the last {last:,} rounds, mean over seeds: " + ", ".join(
            f"{n} {s:.3f}" for n, s in sorted(slopes.items(), key=lambda kv: -kv[1])))
    if world.candidates_per_round is None:
        fixed = [best_fixed_item_regret(world, args.horizon, s) for s in result.seeds]
        print(f"best fixed item (one item for every user, chosen knowing the rewards): regret per "
              f"round {np.mean(fixed):.3f} (mean over seeds), {np.mean(fixed) * args.horizon:,.0f} "
              f"at T={args.horizon:,}")

    frame = result.table()
    frame.to_csv(args.out / "regret.csv", index=False)
    plot_regret(frame, str(args.out / "regret.png"),
                title=f"Cumulative regret, {args.dataset} simulator ({args.seeds} seeds, 95% bands)")
    (args.out / "table.md").write_text(table + "\n")
    (args.out / "summary.json").write_text(json.dumps({
        "command": " ".join([sys.executable, *sys.argv]), "horizon": args.horizon, "seeds": result.seeds,
        "policies": names, "world": world.description, "world_info": world.info, "world_build_s": build_s,
        "run_s": run_s, "machine": machine,
        "decisions_per_second": {n: result.decisions_per_second[n] for n in names},
        "final_regret": {n: result.regret[n][:, -1].tolist() for n in names},
    }, indent=1))


if __name__ == "__main__":
    main()
