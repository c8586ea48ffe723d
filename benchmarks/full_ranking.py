"""Full ranking beside sampled negatives: the target against every item the user never touched.

    .venv/bin/python benchmarks/full_ranking.py [--seed 0] [--jobs 2]

Same new-user split, seed and models as the main job's (a subset: the baselines, sasrec and
the stack over them), next-item protocol with ``candidates="full"``. Sampled negatives are
mostly obscure films, which flatters popularity; this table shows by how much.
"""

from __future__ import annotations

import argparse
import time
import warnings

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.eval.report import format_tables
from thaw.registry import make_model
from thaw.stack import Stack

MODELS = ("random", "pop", "segment-pop", "content", "mf", "bpr", "sasrec")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    split = make_split(load_dataset("ml-100k"), "new-user", seed=args.seed)
    print(split.describe())
    models = {n: make_model(n, seed=args.seed) for n in MODELS}
    models["stack"] = Stack(members=[n for n in MODELS if n != "random"], seed=args.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateResultWarning)
        result = evaluate(models, split, protocol="next-item", ks=(0, 1, 3, 5, 10), candidates="full",
                          seed=args.seed, jobs=args.jobs)
    print(format_tables(result))
    for w in caught:
        print(f"warning: {w.message}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
