"""The cold-to-warm stack on MovieLens-100k: every member, the stack and the per-user oracle at
each K, under both protocols; then new items by item stratum N with TF-IDF and MiniLM content.

    .venv/bin/python benchmarks/stack.py [--part users|items|seeds|blend|all] [--seed 0] [--jobs 2]

users: the new-user split of `thaw run` (K = 0, 1, 3, 5, 10), every registered model, and the
stack over all of them but random (the learned stacker at its defaults: five folds of its six
best members).
items: the new-item and both-cold splits with item strata N = 0, 1, 3, 5, 10, the models that
can score an unseen item, two band-table stacks over them (one whose item-side member is TF-IDF
content, one whose is MiniLM content) and the learned stacker over the TF-IDF members
(`stack-learned`: on the new-item split its out-of-fold episodes come from folds of the
training items, each item scored as a new item by fits that never saw it; on the both-cold
split from folds of users).
seeds (not in "all"): issue 21's seed ensembles on the new-user split, next-item: sasrec and
gru4rec beside their three-seed averages (sasrec-x3, gru4rec-x3), and the learned stacker at the
main job's settings over the four members it kept there (sasrec, gru4rec, mf, segment-pop)
beside the same stacker over the ensembles in their place (`stack-x3`). Both stacks are held to
the best of every member in the run, the ensembles included.
blend (not in "all"): the same split and stack beside `blend`, the equal-weight average of
sasrec's and gru4rec's per-request z-scores (nothing learned): how much of the learned
stacker's ranking gain is blending alone. With `--seed 1` it runs on a second new-user split
(BENCHMARKS section 5's confirmation of the pooled test over K >= 1).
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

from thaw.data.loaders import load_dataset
from thaw.data.splits import make_split
from thaw.eval.headroom import format_headroom, format_pooled, headroom, pooled, target_clusters
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.eval.report import HEADLINE, format_tables
from thaw.models.base import Recommender
from thaw.models.ensemble import mean_z_scores
from thaw.registry import make_model, model_names
from thaw.stack import Stack, StackTable

ITEM_MODELS = ("random", "pop", "segment-pop", "content", "content-minilm", "mf", "fomaml", "deepfm")
SEED_MODELS = ("random", "pop", "segment-pop", "mf", "sasrec", "gru4rec", "sasrec-x3", "gru4rec-x3")
STACK_KEPT = ("sasrec", "gru4rec", "mf", "segment-pop")
"""The members the main job's learned stack kept in next-item (BENCHMARKS section 1)."""


KS = (0, 1, 3, 5, 10)


class EqualBlend(Recommender):
    """The equal-weight average of its members' per-request z-scores: blending, nothing learned."""

    name = "blend"

    def __init__(self, members=("sasrec", "gru4rec"), seed: int = 0) -> None:
        self.members = [make_model(m, seed=seed) for m in members]

    def set_task(self, protocol: str) -> None:
        for member in self.members:
            member.set_task(protocol)

    def fit(self, data, validate=None):
        for member in self.members:
            member.fit(data, validate=validate)
        return self

    def score_many(self, contexts, items):
        return mean_z_scores(self.members, contexts, items)

    def score(self, ctx, items):
        return self.score_many([ctx], [items])[0]


def run(split, models: dict, protocol: str, seed: int, jobs: int, bar: dict | None = None):
    """Evaluate and print the tables, then each stack against its best member and the oracle
    (over ``bar[stack]`` where given, else over the stack's own members); returns the result."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DegenerateResultWarning)
        result = evaluate(models, split, protocol=protocol, ks=KS, seed=seed, jobs=jobs)
    print(format_tables(result))
    print("\nfit seconds: " + ", ".join(f"{m} {s:.0f}" for m, s in
                                         zip(result.timings["model"], result.timings["fit_seconds"], strict=True)))
    clusters = target_clusters(result.targets)
    for name in result.meta.get("stacks", {}):
        members = (bar or {}).get(name) or result.meta["stacks"][name]["members"]
        for metric in dict.fromkeys((HEADLINE[protocol], "hit@10" if protocol == "next-item" else "rmse")):
            print(f"\n{name} against its best member and the oracle, {metric}:")
            print(format_headroom(headroom(result.per_user, name, members, metric, clusters=clusters)))
            if clusters is None:  # new users: each user's own episodes, resampled together
                print(format_pooled(pooled(result.per_user, name, members, metric)))
    for w in caught:
        print(f"warning: {w.message}")
    print(f"\n({split.kind}, {protocol}: {time.perf_counter() - start:.0f} s)\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("users", "items", "seeds", "blend", "all"), default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    start = time.perf_counter()
    data = load_dataset("ml-100k")
    print(f"{data.summary()}; machine: {platform.machine()} {platform.processor() or ''}, "
          f"python {platform.python_version()}")
    if args.part in ("users", "all"):
        split = make_split(data, "new-user", seed=args.seed)
        print(split.describe())
        for protocol in ("next-item", "rating"):
            names = [n for n in model_names() if n not in ("stack", "stack-table")]
            models = {n: make_model(n) for n in names}
            models["stack"] = Stack(members=[n for n in names if n != "random"])
            run(split, models, protocol, args.seed, args.jobs)
    if args.part in ("items", "all"):
        for kind in ("new-item", "both"):
            split = make_split(data, kind, seed=args.seed, item_strata=(0, 1, 3, 5, 10))
            print(split.describe())
            for protocol in ("next-item", "rating"):
                models = {n: make_model(n) for n in ITEM_MODELS}
                shared = [n for n in ITEM_MODELS if n not in ("random", "content", "content-minilm")]
                for name, content in (("stack-tfidf", "content"), ("stack-minilm", "content-minilm")):
                    models[name] = StackTable(members=[*shared, content], content=content)
                    models[name].name = name
                models["stack-learned"] = Stack(members=[*shared, "content"], content="content", folds=3)
                models["stack-learned"].name = "stack-learned"
                run(split, models, protocol, args.seed, args.jobs)
    if args.part == "seeds":
        split = make_split(data, "new-user", seed=args.seed)
        print(split.describe())
        models = {n: make_model(n) for n in SEED_MODELS}
        swapped = [f"{m}-x3" if m in ("sasrec", "gru4rec") else m for m in STACK_KEPT]
        for name, members in (("stack", STACK_KEPT), ("stack-x3", swapped)):
            models[name] = Stack(members=list(members), folds=3)
            models[name].name = name
        everyone = [n for n in SEED_MODELS if n != "random"]
        run(split, models, "next-item", args.seed, args.jobs, bar={"stack": everyone, "stack-x3": everyone})
    if args.part == "blend":
        split = make_split(data, "new-user", seed=args.seed)
        print(split.describe())
        models = {n: make_model(n) for n in ("random", "pop", *STACK_KEPT)}
        models["blend"] = EqualBlend(seed=args.seed)
        models["stack"] = Stack(members=list(STACK_KEPT), folds=3)
        result = run(split, models, "next-item", args.seed, args.jobs)
        for name, against in (("blend", list(STACK_KEPT)), ("stack", ["blend"])):
            print(f"\n{name} against {', '.join(against)}, ndcg@10:")
            print(format_headroom(headroom(result.per_user, name, against, "ndcg@10")))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
