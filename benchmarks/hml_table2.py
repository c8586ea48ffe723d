"""HML's Table 2 scenarios on ML-100k, with the paper's MovieLens-1M figures beside ours.

    .venv/bin/python benchmarks/hml_table2.py [--seed 0] [--models ...]

Scenarios: existing users / existing items (`warm` split), new users / existing items
(`new-user`), existing users / new items (`new-item`). Rating protocol: the first K
interactions of each held-out sequence are the support, the rest the query; MAE, RMSE and
graded NDCG@10, per user, averaged over users. The paper used MovieLens-1M with other
features and its own split, so its numbers are context, not a target.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate

SCENARIOS = (("warm", "existing users / existing items"),
             ("new-user", "new users / existing items"),
             ("new-item", "existing users / new items"))
# HML paper, Table 2, MovieLens (MAE, RMSE, NDCG@10).
PAPER = {
    "warm": {"widedeep": (0.7206, 0.9107, 0.4577), "deepfm": (0.7244, 0.9152, 0.4592),
             "melu": (0.7137, 0.9082, 0.4654), "hml": (0.6968, 0.8573, 0.4959)},
    "new-user": {"widedeep": (0.9385, 1.1520, 0.4252), "deepfm": (0.9530, 1.1666, 0.4217),
                 "melu": (0.9080, 1.0767, 0.4357), "hml": (0.8433, 1.0036, 0.4245)},
    "new-item": {"widedeep": (0.9515, 1.1720, 0.3796), "deepfm": (0.9497, 1.1723, 0.3726),
                 "melu": (0.9275, 1.1006, 0.3878), "hml": (0.8643, 1.0008, 0.3834)},
}
METRICS = ("mae", "rmse", "ndcg@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="random,pop,widedeep,deepfm,finetune,melu,hml")
    parser.add_argument("--ks", default="1,3,5,10")
    args = parser.parse_args()
    ks = tuple(int(k) for k in args.ks.split(","))
    data = load_dataset("ml-100k")
    print(f"machine: {platform.machine()} {platform.processor() or ''}; {data.summary()}; seed {args.seed}")
    for kind, title in SCENARIOS:
        start = time.perf_counter()
        split = make_split(data, kind, seed=args.seed)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DegenerateResultWarning)
            result = evaluate(args.models.split(","), split, protocol="rating", ks=ks,
                              seed=args.seed, progress=False)
        table = result.table.set_index(["model", "metric", "K"])["value"]
        print(f"\n#### {title} (`{kind}` split, {result.meta['test_users']} test users, "
              f"{time.perf_counter() - start:.0f} s)\n")
        header = " | ".join(f"{m.upper()} K={'/'.join(map(str, ks))}" for m in METRICS)
        print(f"| model | {header} | paper MAE / RMSE / NDCG |")
        print("|---|" + "---|" * (len(METRICS) + 1))
        for model in dict.fromkeys(result.table["model"]):
            cells = []
            for metric in METRICS:
                values = [table.get((model, metric, k)) for k in ks]
                cells.append("n/a" if any(v is None for v in values) else
                             " / ".join(f"{v:.3f}" for v in values))
            paper = PAPER[kind].get(model)
            ref = " / ".join(f"{v:.3f}" for v in paper) if paper else ""
            print(f"| {model} | " + " | ".join(cells) + f" | {ref} |")
        timings = result.timings
        fits = ", ".join(f"{m} {s:.0f}" for m, s in zip(timings["model"], timings["fit_seconds"], strict=True))
        print(f"\nfit seconds: {fits}")
        for w in caught:  # every warning recorded, not only the degenerate results
            kind = "" if issubclass(w.category, DegenerateResultWarning) else f"{w.category.__name__}: "
            print(f"warning: {kind}{w.message}")


if __name__ == "__main__":
    main()
