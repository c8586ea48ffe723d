"""Cross-domain transfer on the built-in genre pairs: tgt, cmf, emcdr, ptupcdr and the stack,
with random, pop and segment-pop, on users cold in the target.

    .venv/bin/python benchmarks/cross_domain.py [--pairs ml-100k:drama-comedy,...]
        [--betas 0.2,0.5,0.8] [--protocols rating,next-item] [--control] [--seed 0]

For each pair, cold fraction beta and protocol, two views of one split (validation users
drawn apart from test users, every model selected on them only):

1. the paper's (PTUPCDR): K = 0, every test user with a target interaction, MAE/RMSE over all
   of their target ratings, both as thaw's mean over users and pooled over every rating as the
   papers report it (NDCG@10 of their first target item under next-item);
2. thaw's K-stratified one: K = 0, 1, 3, 5, 10 target interactions as support on top of the
   source history (test users with more than 10 target interactions).

It prints each view's table, PTUPCDR's gain over EMCDR, where transfer stops paying (the
smallest K at which no transfer model is significantly better than tgt), the negative-
transfer alarms, and fit times. ``--control`` adds the first pair at the first beta with its
source histories permuted across users: the alarm must trip there. At the end it prints the
whole run again as the Markdown tables of BENCHMARKS.md section 11.
"""

from __future__ import annotations

import argparse
import time
import warnings

import pandas as pd

from thaw.eval.cross_domain import (
    BASELINE,
    HEADLINES,
    POOLED,
    TRANSFER_MODELS,
    NegativeTransferWarning,
    evaluate_transfer,
)
from thaw.eval.protocol import DegenerateResultWarning
from thaw.eval.statistics import compare
from thaw.transfer import cross_domain_split, load_cross_domain, permuted_source

ORDER = ("random", "pop", "segment-pop", "tgt", "cmf", "emcdr", "ptupcdr", "stack")
SUMMARY_MODELS = ("random", "pop", "tgt", "cmf", "emcdr", "ptupcdr", "stack")  # K-stratified rows
FIVE = ("pop", "tgt", "cmf", "emcdr", "ptupcdr")  # the paper view's RMSE and pooled columns


def table(result, metric: str) -> pd.DataFrame:
    t = result.table[result.table.metric == metric]
    wide = t.pivot(index="model", columns="K", values="value")
    return wide.reindex([m for m in ORDER if m in wide.index])


def stops_paying(result, metric: str) -> int | None:
    """The smallest K at which no transfer model beats tgt significantly (None: never)."""
    pairs = [(m, BASELINE) for m in TRANSFER_MODELS]
    tests = compare(result.per_user[result.per_user.metric == metric], pairs)
    for k in sorted(tests["K"].unique()):
        rows = tests[tests.K == k]
        if not (rows["significant"] & (rows["better"] != BASELINE)).any():
            return int(k)
    return None


def report(name: str, result, protocol: str, seconds: float) -> None:
    print(f"\n=== {name} ({protocol}; {result.meta['test_users']} test users; {seconds:.0f} s) ===")
    for metric in HEADLINES[protocol]:
        print(f"-- {metric} (mean over users) --")
        print(table(result, metric).round(4).to_string())
        if metric in POOLED:
            print(f"-- {POOLED[metric]} (over every query rating, as the papers report it) --")
            print(table(result, POOLED[metric]).round(4).to_string())
    head = HEADLINES[protocol][0]
    wide = table(result, head)
    lower = head in ("mae", "rmse")
    for k in wide.columns:
        e, p = wide.loc["emcdr", k], wide.loc["ptupcdr", k]
        gain = (e - p) / e if lower else (p - e) / e
        print(f"K={k}: ptupcdr vs emcdr {head} {p:.4f} vs {e:.4f} ({gain:+.1%} better for ptupcdr)")
    tests = compare(result.per_user[result.per_user.metric == head], [("ptupcdr", "emcdr")])
    print("paired test ptupcdr vs emcdr: " + "; ".join(
        f"K={r.K} diff {r.diff:+.4f} p={r.p_value:.2g}" for r in tests.itertuples()))
    print(f"transfer stops paying ({head}) at K = {stops_paying(result, head)}")
    alarms = result.meta["negative_transfer"]
    print(f"negative-transfer alarms: {len(alarms)}" + "".join(
        f"\n  {a['model_a']} worse than tgt at K={a['K']} on {a['metric']} ({a['diff']:+.4f}, "
        f"Holm p={a['p_holm']:.2g})" for a in alarms))
    print("fit seconds: " + ", ".join(f"{m} {s:.1f}" for m, s in
                                      zip(result.timings.model, result.timings.fit_seconds, strict=True)))
    if "stacks" in result.meta:
        print(result.meta["stacks"]["stack"]["explain"])


def run(pair, beta: float, protocol: str, seed: int, label: str) -> list[dict]:
    """Both views of one split, reported as they finish; returned for the summary."""
    split = cross_domain_split(pair, beta, seed=seed)
    done = []
    for view, ks in (("paper view", (0,)), ("K-stratified", (0, 1, 3, 5, 10))):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateResultWarning)
            warnings.simplefilter("ignore", NegativeTransferWarning)  # reported below
            result = evaluate_transfer(split, protocol=protocol, ks=ks, seed=seed, progress=False,
                                       n_bootstrap=200, stack=view == "K-stratified")
        seconds = time.perf_counter() - start
        report(f"{label} beta={beta:g}, {view}", result, protocol, seconds)
        done.append({"label": label, "beta": beta, "view": view, "protocol": protocol,
                     "result": result, "seconds": seconds})
    return done


def summary(runs: list[dict]) -> str:
    """The run as BENCHMARKS.md section 11's tables: each view x protocol, then the alarms and
    the fit times."""
    lines = []
    for view in ("paper view", "K-stratified"):
        for protocol in ("rating", "next-item"):
            chosen = [r for r in runs if r["view"] == view and r["protocol"] == protocol]
            if not chosen:
                continue
            head = HEADLINES[protocol][0]
            name = "MAE" if head == "mae" else "NDCG@10"
            if view == "paper view":
                rating = protocol == "rating"
                extra = ["RMSE", "pooled MAE", "pooled RMSE"] if rating else []
                lines += [f"\n**Paper view, {protocol}: {name} at K = 0** (every cold test user"
                          + ("; MAE and RMSE are means over users, pooled ones over every rating, as "
                             "the papers report them)\n" if rating else ")\n"),
                          "| pair | β | test users | random | pop | tgt | cmf | emcdr | ptupcdr | "
                          "ptupcdr vs emcdr (paired p) |" + "".join(f" {e} {' / '.join(FIVE)} |" for e in extra),
                          "|---" * (10 + len(extra)) + "|"]
                for r in chosen:
                    wide = table(r["result"], head)[0]
                    e, p = wide["emcdr"], wide["ptupcdr"]
                    gain = (e - p) / e if head == "mae" else (p - e) / e
                    test = compare(r["result"].per_user[r["result"].per_user.metric == head], [("ptupcdr", "emcdr")])
                    cells = [f"{wide[m]:.4f}" for m in ("random", "pop", "tgt", "cmf", "emcdr", "ptupcdr")]
                    row = (f"| {r['label']} | {r['beta']:g} | {r['result'].meta['test_users']} | "
                           + " | ".join(cells) + f" | {gain:+.1%} better (p={test.p_value.iloc[0]:.2g}) |")
                    for metric in ("rmse", POOLED["mae"], POOLED["rmse"]) if rating else ():
                        five = table(r["result"], metric)[0]
                        row += " " + " / ".join(f"{five[m]:.4f}" for m in FIVE) + " |"
                    lines.append(row)
            else:
                for metric in (head, POOLED[head]) if head in POOLED else (head,):
                    label = f"pooled {name}" if metric != head else name
                    lines += [f"\n**K-stratified, {protocol}: {label} by K** (test users with more than "
                              "10 target interactions" + ("; over every query rating at once)\n"
                                                          if metric != head else ")\n"),
                              "| pair, β (users) | model | K=0 | 1 | 3 | 5 | 10 |", "|---|---|---|---|---|---|---|"]
                    for r in chosen:
                        wide = table(r["result"], metric)
                        first = f"{r['label']}, β={r['beta']:g} ({r['result'].meta['test_users']})"
                        for i, m in enumerate(m for m in SUMMARY_MODELS if m in wide.index):
                            lines.append(f"| {first if i == 0 else ''} | {m} | "
                                         + " | ".join(f"{v:.4f}" for v in wide.loc[m]) + " |")
    lines.append("\n**Negative-transfer alarms** (transfer model significantly worse than tgt; Holm "
                 "within K x metric)\n")
    for r in runs:
        alarms = r["result"].meta["negative_transfer"]
        text = "; ".join(f"{a['model_a']} worse than tgt at K={a['K']} on {a['metric']} ({a['diff']:+.4f}, "
                         f"Holm p={a['p_holm']:.2g})" for a in alarms) or "none"
        lines.append(f"- {r['label']} β={r['beta']:g}, {r['view']}, {r['protocol']}: {text}")
    lines.append("\n**Fit seconds** (one run each)\n")
    for r in runs:
        t = r["result"].timings
        lines.append(f"- {r['label']} β={r['beta']:g} {r['view']} {r['protocol']} ({r['seconds']:.0f} s in "
                     "all): " + ", ".join(f"{m} {s:.1f}" for m, s in zip(t.model, t.fit_seconds, strict=True)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="ml-100k:drama-comedy,ml-100k:action-drama")
    parser.add_argument("--betas", default="0.2,0.5,0.8")
    parser.add_argument("--protocols", default="rating,next-item")
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    names = args.pairs.split(",")
    runs = []
    for name in names:
        pair = load_cross_domain(name)
        print(pair.summary())
        for beta in betas:
            for protocol in args.protocols.split(","):
                runs += run(pair, beta, protocol, args.seed, name)
    if args.control:
        control = permuted_source(load_cross_domain(names[0]), seed=args.seed)
        for protocol in args.protocols.split(","):
            runs += run(control, betas[0], protocol, args.seed, control.name)
    print("\n=== summary (BENCHMARKS.md section 11) ===")
    print(summary(runs))


if __name__ == "__main__":
    main()
