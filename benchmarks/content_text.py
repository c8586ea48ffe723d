"""Content kNN with TF-IDF vs MiniLM item text, from K = 0 (profile only) to K = 10, on ML-100k.

    .venv/bin/python benchmarks/content_text.py [--dataset ml-100k] [--seed 0]

For the new-item split (held-out items; the evaluation users are warm, candidates are held-out
items) and the new-user split (held-out users), evaluates random, pop, content (TF-IDF) and
content-minilm under both protocols at K = 0, 1, 3, 5, 10 and prints thaw's K-stratified
tables. MiniLM embeddings come from the on-disk cache when an earlier run left them there
(``$THAW_CACHE_DIR`` or ``~/.cache/thaw/embeddings``); the fit times printed say which.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.eval.report import format_tables

MODELS = ("random", "pop", "content", "content-minilm")
KS = (0, 1, 3, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_dataset(args.dataset)
    print(data.summary())
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"python {platform.python_version()}")
    for kind in ("new-item", "new-user"):
        split = make_split(data, kind, seed=args.seed)
        for protocol in ("next-item", "rating"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DegenerateResultWarning)
                result = evaluate(list(MODELS), split, protocol=protocol, ks=KS, seed=args.seed,
                                  progress=False)
            print("\n" + format_tables(result))
            print("\nfit / score seconds: " + ", ".join(
                f"{m} {f:.1f} / {s:.1f}" for m, f, s in result.timings.itertuples(index=False)))
            for w in caught:
                if issubclass(w.category, DegenerateResultWarning):
                    print(f"warning: {w.message}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
