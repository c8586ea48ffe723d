"""What validation users chose for issue 11's quality fixes: `bias`'s regularisers, `content`'s
popularity weight, `hml-soft`'s temperature, `mf`'s fold-in prior (validation users only; test
users never seen).

    .venv/bin/python benchmarks/quality_fixes.py [--seed 0] [--parts bias,content,hml,mf] [--dataset ml-100k]

Each model is fitted on the default new-user split of ML-100k (as `thaw evaluate` makes it)
with the validator `thaw evaluate` gives it (K = 0, 1, 3, 5, 10); every value the model's own
grid search asked for is printed, then the value it kept. `content` is also fitted on the
new-item and both-cold splits (item strata 0, 1, 3, 5, 10). For `content` the validation
NDCG@10 is also printed per K, to show how the best weight moves with the support size; so is
`mf`'s per K for each fold-in prior (NDCG@10 ranking, MAE rating) at the regulariser it kept.
The test-user figures are `thaw evaluate` runs (see /tmp/notes/quality-report.md).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.episodes import episodes, score_episodes
from thaw.eval.protocol import SplitValidator
from thaw.models.base import Recommender
from thaw.registry import make_model

KS = (0, 1, 3, 5, 10)


class Recording:
    """A validator that remembers what it was asked: (label of the model's setting, value)."""

    def __init__(self, inner: SplitValidator, label: Callable[[Recommender], str]) -> None:
        self.inner, self.label, self.seen = inner, label, []
        self.empty, self.reason, self.warned = inner.empty, inner.reason, False

    def __call__(self, model: Recommender) -> float:
        value = self.inner(model)
        self.seen.append((self.label(model), value))
        return value


def fit_recorded(name: str, split, protocol: str, label: Callable[[Recommender], str], **params):
    model = make_model(name, seed=0, **params)
    model.set_task(protocol)
    validate = Recording(SplitValidator(split, protocol, KS), label)
    start = time.perf_counter()
    model.fit(split.train, validate=validate)
    return model, validate.seen, time.perf_counter() - start


def print_grid(title: str, seen: list[tuple[str, float]], kept: str) -> None:
    """One model's validation grid as its search asked for it, then what it kept."""
    print(f"\n## {title}\n")
    for label, value in seen:
        print(f"  {label}: {value:.4f}")
    print(f"kept: {kept}")


def bias_part(split) -> None:
    model, seen, seconds = fit_recorded("bias", split, "rating",
                                        lambda m: f"reg_user {m.reg_user:g}, reg_item {m.reg_item:g}")
    print_grid(f"bias (rating protocol; validation -RMSE, higher is better; {seconds:.1f} s)", seen,
               f"reg_user {model.reg_user:g}, reg_item {model.reg_item:g}")


def content_part(data, seed: int) -> None:
    for kind in ("new-user", "new-item", "both"):
        split = make_split(data, kind, seed=seed, item_strata=(0, 1, 3, 5, 10))
        model, seen, seconds = fit_recorded("content", split, "next-item",
                                            lambda m: f"w {m.popularity_weight:g}")
        print_grid(f"content, {kind} split (validation NDCG@10 over K = 0..10; {seconds:.1f} s)", seen,
                   f"w {model.popularity_weight:g}")
        if kind != "new-user":
            continue
        kept = model.popularity_weight
        print("\nvalidation NDCG@10 per K (K = 0 uses the profile fallback where there is a profile)")
        print("  w      " + " ".join(f"K={k:<5d}" for k in KS))
        by_k = {k: episodes(split, "val", k, "next-item", max_k=max(KS)) for k in KS}
        for w in model.popularity_grid:
            model.popularity_weight = w
            row = [np.mean([r["ndcg@10"] for r in score_episodes(model, by_k[k], "next-item")[0]]) for k in KS]
            print(f"  {w:<6g} " + " ".join(f"{v:.4f} " for v in row))
        model.popularity_weight = kept


def hml_part(split) -> None:
    for protocol in ("rating", "next-item"):
        for train_choice in ("query", "support"):
            model, seen, seconds = fit_recorded(
                "hml-soft", split, protocol, lambda m: f"temperature {m.temperature:g}",
                train_choice=train_choice)
            tail = [(label, v) for label, v in seen if label.startswith("temperature")][-len(model.temperature_grid):]
            metric = "-RMSE" if protocol == "rating" else "NDCG@10"
            print_grid(f"hml-soft, {protocol}, train_choice={train_choice} (validation {metric} after "
                       f"training; {seconds:.0f} s; cluster sizes {model.cluster_sizes.tolist()})", tail,
                       f"temperature {model.temperature:g}")


def mf_part(split) -> None:
    for protocol, metric in (("next-item", "ndcg@10"), ("rating", "mae")):
        model, seen, seconds = fit_recorded("mf", split, protocol,
                                            lambda m: f"reg {m.reg:g}, fold prior {m.fold_prior:g}")
        score = "NDCG@10" if protocol == "next-item" else "-RMSE"
        print_grid(f"mf, {protocol} (validation {score} over K = 0..10; {seconds:.1f} s)", seen,
                   f"reg {model.reg:g}, fold prior {model.fold_prior:g}")
        kept = model.fold_prior
        print(f"\nvalidation {metric} per K at reg {model.reg:g}")
        print("  prior  " + " ".join(f"K={k:<5d}" for k in KS))
        by_k = {k: episodes(split, "val", k, protocol, max_k=max(KS)) for k in KS}
        for w in model.fold_priors:
            model.fold_prior = w
            row = [np.mean([r[metric] for r in score_episodes(model, by_k[k], protocol)[0]]) for k in KS]
            print(f"  {w:<6g} " + " ".join(f"{v:.4f} " for v in row))
        model.fold_prior = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", default="bias,content,hml,mf")
    parser.add_argument("--dataset", default="ml-100k")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    data = load_dataset(args.dataset)
    split = make_split(data, "new-user", seed=args.seed)
    print(split.describe())
    if "bias" in parts:
        bias_part(split)
    if "content" in parts:
        content_part(data, args.seed)
    if "hml" in parts:
        hml_part(split)
    if "mf" in parts:
        mf_part(split)


if __name__ == "__main__":
    main()
