"""BENCHMARKS.md section 1's tables, printed from the main job's results folder.

    .venv/bin/thaw run --out results && .venv/bin/python benchmarks/main_job_tables.py results

Markdown tables, mean [bootstrap 95% interval], for each split and protocol of the run: every
metric on the new-user split, the headline metric (NDCG@10, MAE) elsewhere, and the item-side
tables (by the target item's training interactions N) where the split has them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from thaw.eval.episodes import METRICS
from thaw.eval.report import HEADLINE, markdown_table


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    table = pd.read_csv(folder / "results.csv")
    by_item = folder / "results_by_item.csv"
    items = pd.read_csv(by_item) if by_item.exists() else pd.DataFrame()
    for (split, protocol), part in table.groupby(["split", "protocol"], sort=False):
        print(f"\n#### {split} split, {protocol}\n")
        metrics = METRICS[protocol] if split == "new-user" else (HEADLINE[protocol],)
        for metric in metrics:
            if metric in set(part["metric"]):
                print(markdown_table(part, metric) + "\n")
        if len(items):
            mine = items[(items["split"] == split) & (items["protocol"] == protocol)]
            if len(mine):
                print("By the target item's training interactions N (every K's episodes):\n")
                print(markdown_table(mine.rename(columns={"N": "K"}), "ndcg@10").replace("K=", "N=") + "\n")


if __name__ == "__main__":
    main()
