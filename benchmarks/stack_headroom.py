"""BENCHMARKS.md section 5's tables, printed from the main job's results folder.

    .venv/bin/thaw run --out results && .venv/bin/python benchmarks/stack_headroom.py results

For each split and protocol of the run and each stack in it (the learned stack, the learner
validation did not choose beside it as ``stack:<learner>``, and ``stack-table``), per K: the
best single member (chosen after the fact on the test users), the stack, the per-user oracle
over the members, the share of the oracle's headroom the stack captures, and the paired
Wilcoxon test of stack against best member, Holm-corrected over K, and on new users the same
comparison over every K >= 1 at once (``pooled``: one test, users resampled). Then each stack's fit
seconds (the learned one's include its out-of-fold fits) and what the learned stack chose; and
last, how much of the oracle's headroom follows the user: each user's member chosen on their own
episodes at the other K (``thaw.eval.headroom.persistence``), over every member and over the
members the learned stack reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from thaw.eval.headroom import (
    format_headroom,
    format_persistence,
    format_pooled,
    headroom,
    persistence,
    pooled,
    target_clusters,
)
from thaw.eval.report import HEADLINE


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    per_user = pd.read_csv(folder / "per_user.csv")
    # Next-item on the item splits: each test user's target, so verdicts resample targets.
    targets = pd.read_csv(folder / "targets.csv") if (folder / "targets.csv").exists() else pd.DataFrame()
    runs = json.loads((folder / "results.json").read_text())["runs"]
    for run in runs:
        meta = run["meta"]
        split, protocol = meta["split_kind"], meta["protocol"]
        stacks = meta.get("stacks", {})
        if not stacks:
            continue
        part = per_user[(per_user["split"] == split) & (per_user["protocol"] == protocol)]
        clusters = target_clusters(targets[(targets["split"] == split) & (targets["protocol"] == protocol)]
                                   if len(targets) else None)
        metric = HEADLINE[protocol]
        seconds = {t["model"]: t["fit_seconds"] for t in run["timings"]}
        print(f"\n### {split} split, {protocol}, {metric}")
        for name, info in stacks.items():
            members = [m for m in info["members"] if m != "random"]
            variants = [name] + sorted(m for m in set(part["model"]) if m.startswith(f"{name}:"))
            for variant in variants:
                learned = info.get("learned") or {}
                what = (f"learned stacker, {variant.partition(':')[2]}" if ":" in variant else
                        f"learned stacker, {learned['kind']} (chosen on validation)" if learned else
                        "band table")
                print(f"\n{variant} ({what}):\n```")
                print(format_headroom(headroom(part, variant, members, metric, clusters=clusters)))
                if split == "new-user":
                    print(format_pooled(pooled(part, variant, members, metric)))
                print("```")
            learned = info.get("learned") or {}
            if learned:
                scores = ", ".join(f"{k} {v:.4f}" for k, v in learned["validation"].items())
                print(f"\n{name}: fit {seconds.get(name, float('nan')):.0f} s with its out-of-fold fits "
                      f"({learned['folds']} folds, {learned['oof_episodes']} episodes); reads "
                      f"{', '.join(learned['members'])}; validation {scores}")
            else:
                print(f"\n{name}: fit {seconds.get(name, float('nan')):.1f} s")
            print(f"\n`thaw stack explain` of {name}:\n```\n{info['explain']}\n```")
        everyone = sorted({m for info in stacks.values() for m in info["members"]} - {"random"})
        read = next((info["learned"]["members"] for info in stacks.values() if info.get("learned")), None)
        for members, which in ((everyone, f"the {len(everyone)} members"),
                               (read, f"the learned stack's: {', '.join(read or ())}")):
            if members:
                print(f"\nThe oracle's headroom that follows the user ({metric}, over {which}):\n```")
                print(format_persistence(persistence(part, members, metric)))
                print("```")


if __name__ == "__main__":
    main()
