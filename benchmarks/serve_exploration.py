"""Prior-informed Thompson sampling against fixed epsilon-greedy on thaw's ML-100k simulator.

The simulator (thaw.bandits.simulate.ml100k_world, as in BENCHMARKS' bandit section): held-out
users arrive cold with their profile, 300 candidate items each round, regret against a per-user
oracle. ``thompson-prior`` (thaw.serve.exploration.PriorThompson) starts each (gender x age
band, item) arm at Beta(s p, s (1 - p)), where p is that segment's like rate (rating >= 4)
among the *warm* users only, shrunk to the item's and then the global like rate (5
pseudo-ratings each); s = 10. Both constants were fixed before the first run, not tuned on it.
``thompson`` is the same sampler from Beta(1, 1) (context-free), ``egreedy`` epsilon = 0.1.

    python benchmarks/serve_exploration.py [--horizon 30000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHRINK = 5.0
STRENGTH = 10.0
REPORT_AT = (1_000, 5_000, 10_000, 30_000, 100_000)


def segment_of(profile: dict) -> tuple:
    from thaw.data.features import age_band

    return (profile.get("gender"), age_band(profile.get("age")))


def warm_like_prior(dataset, world, seed: int, holdout_frac: float = 0.2):
    """p(like | segment, item) from the warm users' ratings; the held-out users are re-derived
    exactly as ml100k_world draws them and checked against the world's contexts."""
    inter = dataset.interactions
    rated = np.unique(inter.user)
    n_hold = max(1, int(round(holdout_frac * len(rated))))
    held = np.sort(np.random.default_rng(seed).permutation(rated)[:n_hold])
    assert len(held) == len(world.contexts) and all(
        dict(world.contexts[k].profile) == dataset.profile(int(u)) for k, u in enumerate(held))
    warm = ~np.isin(inter.user, held)
    col = np.full(dataset.n_items, -1)
    col[world.items] = np.arange(len(world.items))
    rows = warm & (col[inter.item] >= 0)
    items, likes = col[inter.item[rows]], (inter.rating[rows] >= 4).astype(float)
    segments = sorted({segment_of(dataset.profile(int(u))) for u in np.unique(inter.user)}, key=str)
    seg_index = {s: k for k, s in enumerate(segments)}
    user_seg = {int(u): seg_index[segment_of(dataset.profile(int(u)))] for u in np.unique(inter.user[rows])}
    segs = np.array([user_seg[int(u)] for u in inter.user[rows]])
    global_rate = likes.mean()
    n_item = np.bincount(items, minlength=len(world.items))
    item_rate = (np.bincount(items, likes, len(world.items)) + SHRINK * global_rate) / (n_item + SHRINK)
    table = np.tile(item_rate, (len(segments), 1))
    flat = segs * len(world.items) + items
    n_seg = np.bincount(flat, minlength=table.size).reshape(table.shape)
    likes_seg = np.bincount(flat, likes, table.size).reshape(table.shape)
    table = (likes_seg + SHRINK * item_rate) / (n_seg + SHRINK)

    def prior(ctx, cands):
        return table[seg_index[segment_of(ctx.profile)], col[cands]]
    return prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--horizon", type=int, default=30_000)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from thaw.bandits.simulate import make_policy, mean_band, ml100k_world, simulate
    from thaw.data.loaders import load_dataset
    from thaw.serve.exploration import PriorThompson

    started = time.perf_counter()
    dataset = load_dataset("ml-100k")
    world = ml100k_world(dataset, seed=0)
    prior = warm_like_prior(dataset, world, seed=0)
    print(world.description)
    factories = {
        "egreedy": lambda s: make_policy("egreedy", world, s),
        "thompson": lambda s: make_policy("thompson", world, s),
        "thompson-prior": lambda s: PriorThompson(prior, lambda ctx: segment_of(ctx.profile), STRENGTH, seed=s),
    }
    result = simulate(world, factories, args.horizon, list(range(args.seeds)), progress=False)
    ts = [t for t in REPORT_AT if t <= args.horizon]
    print(f"\ncumulative regret, mean over seeds 0-{args.seeds - 1} [95% interval]; decisions/s")
    print("| policy | " + " | ".join(f"T={t:,}" for t in ts) + " | decisions/s |")
    print("|---|" + "---|" * (len(ts) + 1))
    for name, curves in result.regret.items():
        cells = []
        for t in ts:
            mean, low, high = mean_band(curves[:, t - 1])
            cells.append(f"{mean:,.0f} [{low:,.0f}, {high:,.0f}]")
        print(f"| {name} | " + " | ".join(cells) + f" | {np.mean(result.decisions_per_second[name]):,.0f} |")
    base = result.regret["egreedy"]
    print("\nregret minus egreedy's on the same seeds (paired: same users, same rewards), mean [95% interval]")
    for name, curves in result.regret.items():
        if name != "egreedy":
            cells = []
            for t in ts:
                mean, low, high = mean_band(curves[:, t - 1] - base[:, t - 1])
                cells.append(f"T={t:,}: {mean:+,.0f} [{low:+,.0f}, {high:+,.0f}]")
            print(f"  {name}: " + "; ".join(cells))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
