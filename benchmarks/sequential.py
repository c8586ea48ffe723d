"""The cold-start sequential experiments of MetaTL and metaCSR, on ML-100k.

    .venv/bin/python benchmarks/sequential.py temporal  [--seed 0] [--jobs 2]
    .venv/bin/python benchmarks/sequential.py scenarios [--seed 0] [--jobs 2] [--plot PATH]
    .venv/bin/python benchmarks/sequential.py training  [--seed 0]

``temporal`` is MetaTL's Table 2 / Figure 2 setting: users whose first interaction falls
after a cut are the test users (temporal split), K = 2, 3, 4 support interactions, Hit@1 and
MRR of the next item among it and 100 sampled negatives. ``scenarios`` is metaCSR's Tables 3-5
and Figures 3-4: AUC, MAP and Hit@N / NDCG@N for N = 1..20, in the cold-start scenario (new
users, held out entirely) and the warm-start one (users whose earlier half is in training),
with K = 9 support items before the target (metaCSR keeps a new user's 10 earliest
interactions and holds out the last). With one target per user, MAP equals MRR.
``training`` is about the training budgets, on the new-user split of ``thaw run`` (K = 1, 3, 5,
10): MetaTL with first- (the default) and second-order MAML and with 16 epochs of 4 tasks per
user instead of 8 of 32, metaCSR with 10 epochs (the default) and 25, and SASRec; for each,
the fit time, the validation NDCG@10 of every epoch and the test NDCG@10. It fits one model
at a time in this process (to read the fitted models' epoch histories), so its fit seconds
are comparable with each other.

The papers used other data (Amazon and Goodreads; MovieLens-1M, Last.fm, Amazon-Video), so
their figures, printed beside ours, are context, not targets.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.registry import make_model

TEMPORAL_MODELS = "random,pop,bpr,gru4rec,sasrec,melu,metatl-nomaml,metatl,metacsr"
SCENARIO_MODELS = ("random,pop,bpr,gru4rec,sasrec,melu,metatl,metacsr,metacsr-nodiffusion,"
                   "metacsr-noseq,metacsr-nometa")
# MetaTL paper, Table 2 (K = 3): Hit@1 / MRR on Electronics, Movie, Book.
METATL_PAPER = {"bpr": "0.066/0.123, 0.025/0.083, 0.043/0.098",
                "gru4rec": "0.185/0.301, 0.189/0.309, 0.330/0.466",
                "sasrec": "0.193/0.318, 0.211/0.345, 0.347/0.488",
                "melu": "0.172/0.265, 0.168/0.289, 0.318/0.423",
                "metatl": "0.224/0.352, 0.258/0.380, 0.420/0.555"}
# metaCSR paper, MovieLens-1M: Table 3 (cold) and Table 4 (warm) AUC / MAP; Table 5 AUC.
METACSR_PAPER = {
    "new-user": {"bpr": "0.7355 / 0.2031", "gru4rec": "LSTM 0.7621 / 0.2119",
                 "melu": "0.7391 / 0.1964", "metacsr": "0.8623 / 0.2987",
                 "metacsr-nodiffusion": "AUC 0.8285", "metacsr-noseq": "AUC 0.8297",
                 "metacsr-nometa": "AUC 0.8056"},
    "warm": {"bpr": "0.8054 / 0.2079", "gru4rec": "LSTM 0.8272 / 0.2253", "melu": "0.7722 / 0.1885"},
}
CUTOFFS = tuple(range(1, 21))


def _evaluate(models, split, ks, seed: int, jobs: int, cutoffs=(1, 10)):
    """Evaluate, printing the protocol's degenerate-result warnings rather than hiding them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateResultWarning)
        result = evaluate(models.split(",") if isinstance(models, str) else models, split, ks=ks,
                          seed=seed, progress=False, jobs=jobs, cutoffs=cutoffs)
    for w in caught:  # every warning recorded, not only the degenerate results
        kind = "" if issubclass(w.category, DegenerateResultWarning) else f"{w.category.__name__}: "
        print(f"warning: {kind}{w.message}")
    return result


def _fits(result) -> str:
    timings = result.timings
    return ", ".join(f"{m} {s:.0f}" for m, s in zip(timings["model"], timings["fit_seconds"], strict=True))


def temporal(args: argparse.Namespace) -> None:
    data = load_dataset("ml-100k")
    split = make_split(data, "temporal", seed=args.seed)
    start = time.perf_counter()
    result = _evaluate(args.models or TEMPORAL_MODELS, split, (2, 3, 4), args.seed, args.jobs)
    table = result.table.set_index(["model", "metric", "K"])
    print(f"{split.describe()}; {result.meta['test_users']} test users; "
          f"{time.perf_counter() - start:.0f} s wall with {args.jobs} jobs\n")
    print("| model | Hit@1 K=2 | K=3 | K=4 | MRR K=2 | K=3 | K=4 | paper K=3 Hit@1/MRR (Electronics, Movie, Book) |")
    print("|---|---|---|---|---|---|---|---|")
    for model in dict.fromkeys(result.table["model"]):
        cells = [f"{table.loc[(model, metric, k), 'value']:.3f}" for metric in ("hit@1", "mrr")
                 for k in (2, 3, 4)]
        print(f"| {model} | " + " | ".join(cells) + f" | {METATL_PAPER.get(model, '')} |")
    print(f"\nfit seconds: {_fits(result)}")
    _significance(result, "mrr", 3)


def scenarios(args: argparse.Namespace) -> None:
    data = load_dataset("ml-100k")
    curves = {}
    for kind, title in (("new-user", "cold-start (new users)"), ("warm", "warm-start (known users)")):
        split = make_split(data, kind, seed=args.seed)
        start = time.perf_counter()
        result = _evaluate(args.models or SCENARIO_MODELS, split, (9,), args.seed, args.jobs, CUTOFFS)
        wide = result.table.pivot_table(index="model", columns="metric", values="value", sort=False)
        wide["ndcg@1"] = wide["hit@1"]  # one target: NDCG@1 is Hit@1
        curves[title] = wide
        print(f"\n#### {title}: `{kind}` split, K = 9, {result.meta['test_users']} test users, "
              f"{time.perf_counter() - start:.0f} s wall with {args.jobs} jobs\n")
        print("| model | AUC | MAP (= MRR) | Hit@1 | Hit@5 | Hit@10 | Hit@20 | NDCG@5 | NDCG@10 | NDCG@20 "
              "| paper (ML-1M) AUC / MAP |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for model, row in wide.iterrows():
            cells = [row[m] for m in ("auc", "mrr", "hit@1", "hit@5", "hit@10", "hit@20", "ndcg@5",
                                      "ndcg@10", "ndcg@20")]
            paper = METACSR_PAPER.get(kind, {}).get(model, "")
            print(f"| {model} | " + " | ".join(f"{v:.3f}" for v in cells) + f" | {paper} |")
        print(f"\nfit seconds: {_fits(result)}")
        _significance(result, "auc", 9)
    if args.plot:
        _plot(curves, Path(args.plot))
        print(f"\nwrote {args.plot}")


def _significance(result, metric: str, k: int) -> None:
    """The best model at this K against every other: paired Wilcoxon p, raw and Holm-corrected
    (Holm over every pair of models at this K and metric, as in comparisons.csv)."""
    comp = result.comparisons
    rows = comp[(comp["metric"] == metric) & (comp["K"] == k)]
    means = result.table[(result.table["metric"] == metric) & (result.table["K"] == k)].set_index("model")["value"]
    if not len(rows) or not len(means):
        return
    best = means.idxmax()
    mine = rows[(rows["model_a"] == best) | (rows["model_b"] == best)]
    rivals = ", ".join(f"{r.model_b if r.model_a == best else r.model_a} p={r.p_value:.3g} (Holm {r.p_holm:.3g})"
                       for r in mine.itertuples())
    print(f"paired Wilcoxon, {metric} at K={k}, best {best} against: {rivals}")


def training(args: argparse.Namespace) -> None:
    data = load_dataset("ml-100k")
    split = make_split(data, "new-user", seed=args.seed)
    models = {"metatl": make_model("metatl"),
              "metatl, second order": make_model("metatl", first_order=False),
              "metatl, 16 epochs x 4 tasks": make_model("metatl", epochs=16, tasks_per_user=4),
              "metacsr": make_model("metacsr"),
              "metacsr, 25 epochs": make_model("metacsr", epochs=25),
              "sasrec": make_model("sasrec")}
    ks = (1, 3, 5, 10)
    start = time.perf_counter()
    result = _evaluate(models, split, ks, args.seed, 1)
    ndcg = result.table[result.table["metric"] == "ndcg@10"].pivot(index="model", columns="K", values="value")
    fits = dict(zip(result.timings["model"], result.timings["fit_seconds"], strict=True))
    print(f"{split.describe()}; {result.meta['test_users']} test users; "
          f"{time.perf_counter() - start:.0f} s wall, one model at a time\n")
    print("| model | fit s | epochs run | best validation NDCG@10 (epoch) | test NDCG@10 "
          + " / ".join(f"K={k}" for k in ks) + " |")
    print("|---|---|---|---|---|")
    for name, model in models.items():
        history = [h["validation"] for h in model.history]
        best = int(np.argmax(history))
        print(f"| {name} | {fits[name]:.0f} | {len(history)} | {history[best]:.3f} ({best + 1}) | "
              + " / ".join(f"{ndcg.loc[name, k]:.3f}" for k in ks) + " |")
    print("\nvalidation NDCG@10 by epoch:")
    for name, model in models.items():
        print(f"  {name}: " + " ".join(f"{h['validation']:.3f}" for h in model.history))
    _significance(result, "ndcg@10", 3)


def _plot(curves: dict[str, pd.DataFrame], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(curves), figsize=(6 * len(curves), 8), sharex=True)
    for col, (title, wide) in enumerate(curves.items()):
        for row, metric in enumerate(("hit", "ndcg")):
            ax = axes[row][col]
            for model, values in wide.iterrows():
                ys = [values[f"{metric}@{n}"] for n in CUTOFFS]
                style = "-" if model.startswith(("metacsr", "metatl")) else "--"
                ax.plot(CUTOFFS, ys, style, marker="o", markersize=3, label=model)
            ax.set_title(f"{title}: {'Hit' if metric == 'hit' else 'NDCG'}@N")
            ax.set_xlabel("N")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle("ML-100k, K = 9 support items, target among 100 sampled negatives")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", choices=("temporal", "scenarios", "training"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--models", default=None, help="comma-separated; default: the papers' sets")
    parser.add_argument("--plot", default="benchmarks/figures/metacsr_hit_ndcg_at_n.png")
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}; seed {args.seed}")
    {"temporal": temporal, "scenarios": scenarios, "training": training}[args.experiment](args)


if __name__ == "__main__":
    main()
