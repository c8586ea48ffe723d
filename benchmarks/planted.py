"""Does the idea work? The meta-learners on synthetic data with a planted structure.

    .venv/bin/python benchmarks/planted.py [--part clusters|walks|all]

clusters (BENCHMARKS section 2): 400 users in 4 hidden taste clusters
(``thaw.data.synthetic.make_preference_clusters``), profiles identical, items drawn uniformly,
so only a user's own support tells their taste. pop, finetune, maml and HML with one
initialisation per cluster, the same settings for each (20 epochs, outer lr 1e-3, 2 inner steps
at lr 0.05); rating MAE at K = 3 on test users, data seeds 0 and 1. Then seed 0 again with
MeLU's outer lr 5e-3 for maml and HML, and a 2-cluster world. For every HML: the share of
meta-training tasks each initialisation took, and how often the initialisation HML picks from
a test user's support alone (K = 3) is the one for the user's true cluster (each
initialisation is labelled with the cluster most of the users it gets belong to).

walks (BENCHMARKS section 4): 600 users walk a line of 400 items with stride 1 (even users) or
2 (odd users) from a random start (``make_step_walks``); the next item follows from the last
one and the stride, which two transition pairs (K = 3) show. Hit@1 of the next item among 100
sampled negatives for pop, SASRec, MetaTL (4 epochs of 16 tasks per user) and metaCSR (3
epochs).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import numpy as np

from thaw.data.splits import make_split
from thaw.data.synthetic import make_preference_clusters, make_step_walks
from thaw.eval.episodes import episodes
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.registry import make_model

SAME = {"epochs": 20, "lr": 1e-3, "inner_steps": 2, "inner_lr": 0.05}


def _evaluate(models: dict, split, protocol: str, ks: tuple[int, ...]):
    """Evaluate in this process (the fitted models are inspected afterwards), printing the
    protocol's degenerate-result warnings rather than hiding them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateResultWarning)
        result = evaluate(models, split, protocol=protocol, ks=ks, progress=False, n_bootstrap=200)
    for w in caught:  # every warning recorded, not only the degenerate results
        kind = "" if issubclass(w.category, DegenerateResultWarning) else f"{w.category.__name__}: "
        print(f"warning: {kind}{w.message}")
    return result


def cluster_agreement(hml, split, cluster: np.ndarray, k: int) -> float:
    """Share of test users whose initialisation, picked from their first k ratings alone, is
    the one labelled with their true cluster (label: the majority cluster of its users)."""
    eps = episodes(split, "test", k, "rating", max_k=k)
    chosen = hml.choose([e.context for e in eps])
    truth = cluster[[e.user for e in eps]]
    counts = np.zeros((hml.n_inits, int(cluster.max()) + 1), dtype=np.int64)
    np.add.at(counts, (chosen, truth), 1)
    return float(counts.max(axis=1).sum() / len(eps))


def clusters() -> None:
    print("\n## Planted taste clusters: rating MAE at K = 3, test users\n")
    print("| world | pop | finetune | maml | hml | hml's task shares per initialisation | "
          "hml picks the user's cluster (K = 3) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [("4 clusters, data seed 0", 4, 0, 1e-3), ("4 clusters, data seed 1", 4, 1, 1e-3),
            ("4 clusters, data seed 0, outer lr 5e-3", 4, 0, 5e-3),
            ("2 clusters, data seed 0", 2, 0, 1e-3)]
    for title, n_clusters, seed, lr in runs:
        start = time.perf_counter()
        data, cluster = make_preference_clusters(n_users=400, n_items=60, n_clusters=n_clusters,
                                                 seed=seed, return_clusters=True)
        split = make_split(data, "new-user", seed=0)
        same = {**SAME, "lr": lr}
        models = {"pop": make_model("pop"), "maml": make_model("maml", **same),
                  "hml": make_model("hml", n_inits=n_clusters, **same)}
        if lr == SAME["lr"] and n_clusters == 4:
            models["finetune"] = make_model("finetune", **same)
        result = _evaluate(models, split, "rating", (3,))
        mae = result.table[result.table["metric"] == "mae"].set_index("model")["value"]
        cells = [f"{mae[m]:.3f}" if m in mae else "" for m in ("pop", "finetune", "maml", "hml")]
        sizes = models["hml"].cluster_sizes
        shares = ", ".join(f"{s:.0%}" for s in sizes / sizes.sum())
        agree = cluster_agreement(models["hml"], split, cluster, 3)
        print(f"| {title} | " + " | ".join(cells) +
              f" | {shares} | {agree:.1%} | {time.perf_counter() - start:.0f} |", flush=True)
    print(f"\n{result.meta['test_users']} test users per world; settings {SAME} "
          "(outer lr as the row says)")


def walks() -> None:
    split = make_split(make_step_walks(n_users=600, n_items=400), "new-user", seed=0)
    models = {"pop": make_model("pop"), "sasrec": make_model("sasrec"),
              "metatl": make_model("metatl", epochs=4, tasks_per_user=16),
              "metacsr": make_model("metacsr", epochs=3)}
    start = time.perf_counter()
    result = _evaluate(models, split, "next-item", (1, 3))
    hit1 = result.table[result.table["metric"] == "hit@1"].pivot(index="model", columns="K",
                                                                  values="value")
    print(f"\n## Planted strides: Hit@1, {result.meta['test_users']} test users "
          f"({time.perf_counter() - start:.0f} s)\n")
    print("| model | K=1 | K=3 | epochs run |")
    print("|---|---|---|---|")
    for name, model in models.items():
        run = len(getattr(model, "history", [])) or ""
        print(f"| {name} | {hit1.loc[name, 1]:.3f} | {hit1.loc[name, 3]:.3f} | {run} |")
    print("\nfit seconds: " + ", ".join(f"{m} {s:.0f}" for m, s in
                                        zip(result.timings["model"], result.timings["fit_seconds"], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("clusters", "walks", "all"), default="all")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}")
    start = time.perf_counter()
    if args.part in ("clusters", "all"):
        clusters()
    if args.part in ("walks", "all"):
        walks()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
