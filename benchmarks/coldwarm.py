"""Cold & Warm Net against the matching models it is compared with and thaw's own models.

    .venv/bin/python benchmarks/coldwarm.py [--dataset ml-100k] [--seed 0] [--quick] [--models a,b]

One new-user split; every model fitted once on its training users (validation users only for
early stopping), then scored three ways:

1. thaw's protocol: the (K+1)-th item against 100 sampled negatives, K = 0, 1, 3, 5, 10.
2. the same with every item the user never touched as candidates (full ranking).
3. the paper's view: full-catalogue Hit Rate@N and NDCG@N (N = 10, 50) by user type, where
   the type is how much the user has done at request time: cold-start K in {0, 2, 5},
   warm-up K in {10, 20}, active K = 40 (over the test users with more than 40 interactions,
   the same users at every K).

Paired Wilcoxon tests (Holm-corrected per K and metric): coldwarm against each ablation, each
matching baseline and thaw's best models. ``--quick`` drops sasrec and melu (the slow fits).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.eval.report import format_tables
from thaw.eval.statistics import compare
from thaw.models.coldwarm import ColdWarmColdOnly, ColdWarmNet, ColdWarmNoBias, ColdWarmNoDKD, ColdWarmNoGate
from thaw.models.two_tower import DSSM, FM, YouTubeDNN
from thaw.registry import make_model

THAW = ("random", "pop", "mf", "sasrec", "melu")
ABLATIONS = ("coldwarm-nogate", "coldwarm-nodkd", "coldwarm-nobias", "coldwarm-coldonly")
BASELINES = ("dssm", "youtubednn", "fm")
PAPER_GROUPS = {"cold-start": (0, 2, 5), "warm-up": (10, 20), "active": (40,)}


def models(seed: int, quick: bool, only: list[str] | None = None) -> dict:
    """Every model of the comparison, or those named in ``only`` (coldwarm is always kept)."""
    thaw = [n for n in THAW if not (quick and n in ("sasrec", "melu"))]
    out = {n: make_model(n, seed=seed) for n in thaw}
    for cls in (ColdWarmNet, ColdWarmNoGate, ColdWarmNoDKD, ColdWarmNoBias, ColdWarmColdOnly, DSSM, YouTubeDNN, FM):
        out[cls.name] = cls(seed=seed)
    if only:
        unknown = sorted(set(only) - set(out))
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(out)}")
        out = {n: m for n, m in out.items() if n in only or n == "coldwarm"}
    return out


def paired(per_user: pd.DataFrame, others: list[str], metric: str) -> str:
    """coldwarm minus each other model, per K, with the Holm-corrected p (* below 0.05)."""
    pairs = [("coldwarm", o) for o in others]
    rows = compare(per_user[per_user["metric"] == metric], pairs)
    lines = [f"coldwarm minus each model, {metric} (Holm-corrected Wilcoxon p; * p < 0.05)"]
    for other in others:
        cells = []
        for k, group in rows[rows["model_b"] == other].groupby("K"):
            r = group.iloc[0]
            cells.append(f"K={k}: {r['diff']:+.3f} (p {r['p_holm']:.3f}){'*' if r['significant'] else ''}")
        lines.append(f"  {other:18s} " + "  ".join(cells))
    return "\n".join(lines)


def paper_view(result, names: list[str]) -> str:
    """Hit Rate@N and NDCG@N averaged over each user type's K (each K weighs the same)."""
    table = result.table
    lines = ["the paper's view: full catalogue, users by type at request time "
             f"({', '.join(f'{g} K in {ks}' for g, ks in PAPER_GROUPS.items())}); "
             f"{result.meta['test_users']} test users"]
    for metric in ("hit@10", "ndcg@10", "hit@50", "ndcg@50"):
        frame = table[table["metric"] == metric]
        wide = pd.DataFrame({group: frame[frame["K"].isin(ks)].groupby("model")["value"].mean()
                             for group, ks in PAPER_GROUPS.items()}).loc[names]
        lines.append(f"\n{metric}\n  " + wide.round(4).to_string().replace("\n", "\n  "))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="leave out sasrec and melu")
    parser.add_argument("--models", type=lambda s: s.split(","), default=None,
                        help="comma-separated subset to run (coldwarm always runs: every test is against it)")
    args = parser.parse_args()
    start = time.perf_counter()
    split = make_split(load_dataset(args.dataset), "new-user", seed=args.seed)
    print(split.describe())
    fitted = models(args.seed, args.quick, args.models)
    names = list(fitted)
    versus = [n for n in (*ABLATIONS, *BASELINES, "pop", "mf", "sasrec", "melu") if n in fitted]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateResultWarning)
        sampled = evaluate(fitted, split, protocol="next-item", ks=(0, 1, 3, 5, 10), seed=args.seed,
                           jobs=1, progress=False)
        print(format_tables(sampled))
        print("\n" + paired(sampled.per_user, versus, "ndcg@10"))
        fits = sampled.timings.set_index("model")["fit_seconds"]
        print("\nfit seconds: " + ", ".join(f"{m} {fits[m]:.0f}" for m in names))
        full = evaluate(fitted, split, protocol="next-item", ks=(0, 1, 3, 5, 10), candidates="full",
                        seed=args.seed, fit=False, progress=False)
        print("\n" + format_tables(full))
        print("\n" + paired(full.per_user, versus, "ndcg@10"))
        paper = evaluate(fitted, split, protocol="next-item", ks=sorted(k for ks in PAPER_GROUPS.values() for k in ks),
                         candidates="full", cutoffs=(10, 50), seed=args.seed, fit=False, progress=False)
        print("\n" + paper_view(paper, names))
        if "coldwarm" in fitted:
            gates = {k: np.mean([fitted["coldwarm"].gate_value(e.context) for e in eps])
                     for k, eps in _episodes_by_k(split, (0, 1, 3, 5, 10, 20, 40)).items()}
            print("\ncoldwarm's gate (weight of the warm expert), mean over test users by K: "
                  + ", ".join(f"K={k}: {v:.3f}" for k, v in gates.items()))
    for w in caught:
        print(f"warning: {w.message}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def _episodes_by_k(split, ks):
    from thaw.eval.episodes import episodes

    return {k: episodes(split, "test", k, "next-item", max_k=max(ks)) for k in ks}


if __name__ == "__main__":
    main()
