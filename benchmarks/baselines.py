"""ML-100k tables of thaw's baselines under both protocols, as markdown for BENCHMARKS.md.

    .venv/bin/python benchmarks/baselines.py [--dataset ml-100k] [--seed 0] [--models ...]

Same split and protocol as `thaw run` (new-user split, 20% test users, K = 1, 3, 5, 10).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.episodes import METRICS
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.eval.report import markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="random,pop,segment-pop,content,mf,bpr")
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_dataset(args.dataset)
    split = make_split(data, "new-user", seed=args.seed)
    print(f"{data.summary()}; {split.describe()}")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    for protocol in ("next-item", "rating"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateResultWarning)
            result = evaluate(args.models.split(","), split, protocol=protocol, seed=args.seed)
        print(f"\n### {protocol} ({result.meta['test_users']} test users, mean [95% bootstrap CI])\n")
        for metric in METRICS[protocol]:
            if metric in set(result.table["metric"]):
                print(markdown_table(result.table, metric) + "\n")
        print("fit seconds: " + ", ".join(f"{m} {s:.1f}" for m, s in
                                          zip(result.timings["model"], result.timings["fit_seconds"], strict=False)))
        for w in caught:
            print(f"warning: {w.message}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
