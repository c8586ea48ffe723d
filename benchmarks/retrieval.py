"""Top-100 over a whole catalogue: exact inner products against faiss's inverted file.

    .venv/bin/python benchmarks/retrieval.py [--dataset ml-1m] [--epochs 5] [--items 1000000]

Two catalogues: the item vectors of a Cold & Warm Net fitted on the data set's new-user split
(``--epochs`` caps its training: index speed and recall do not depend on how well it ranks)
queried with its test users' vectors, and a synthetic catalogue of ``--items`` clustered
random vectors of the same width queried with random vectors. For each: build time, latency
per query (batches of 1 and of 256), and recall@100 of faiss against the exact top 100.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.episodes import episodes
from thaw.models.coldwarm import ColdWarmNet
from thaw.models.retrieval import ExactIndex, FaissIndex, recall_at

N = 100


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def measure(name: str, items: np.ndarray, queries: np.ndarray, n_probe: int) -> None:
    exact, exact_build = timed(ExactIndex, items)
    approx, approx_build = timed(FaissIndex, items, None, n_probe)
    print(f"\n{name}: {len(items):,} items of width {items.shape[1]}, {len(queries)} queries")
    print(f"  build: exact {exact_build:.2f} s, faiss IVF ({approx.index.nlist} lists, "
          f"{approx.index.nprobe} probed) {approx_build:.2f} s")
    (truth, _), t_exact = timed(exact.search, queries, N)
    (found, _), t_approx = timed(approx.search, queries, N)
    singles = queries[:50]
    _, t_exact_1 = timed(lambda: [exact.search(q[None], N) for q in singles])
    _, t_approx_1 = timed(lambda: [approx.search(q[None], N) for q in singles])
    print(f"  latency per query, one at a time: exact {1e3 * t_exact_1 / len(singles):.2f} ms, "
          f"faiss {1e3 * t_approx_1 / len(singles):.2f} ms")
    print(f"  latency per query, in one batch:  exact {1e3 * t_exact / len(queries):.3f} ms, "
          f"faiss {1e3 * t_approx / len(queries):.3f} ms")
    print(f"  recall@{N} of faiss against exact: {recall_at(found, truth):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--n-probe", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split = make_split(load_dataset(args.dataset), "new-user", seed=args.seed)
    model, fit_seconds = timed(ColdWarmNet(epochs=args.epochs, seed=args.seed).fit, split.train)
    print(f"{split.describe()}; coldwarm fitted in {fit_seconds:.0f} s ({args.epochs} epochs at most)")
    contexts = [e.context for k in (0, 5) for e in episodes(split, "test", k, "next-item", max_k=5)]
    queries = model.user_embeddings(contexts)
    measure(f"{args.dataset} (coldwarm's vectors)", model.item_embeddings(), queries, args.n_probe)
    rng = np.random.default_rng(args.seed)
    width = queries.shape[1]
    centres = rng.normal(size=(1000, width)).astype(np.float32)
    noise = 0.5 * rng.normal(size=(args.items, width)).astype(np.float32)
    items = centres[rng.integers(0, len(centres), args.items)] + noise
    measure("synthetic", items, rng.normal(size=(256, width)).astype(np.float32), args.n_probe)


if __name__ == "__main__":
    main()
