"""How good is a stack? Against its best member and against an oracle over its members.

At each K the best single member is picked after the fact, on the test users themselves: a
bar the stack (which chose on validation users) can only meet by routing well. The oracle
picks the best member for every test user separately, the ceiling any router over these
members could reach. The share of that headroom the stack captures is (stack - best) /
(oracle - best). The paired tests are Holm-corrected over the K of one table. Where test
users share targets (new items: one film can be the target of a third of them), ``clusters``
adds a test that resamples targets, not users, and the verdict is that test's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from thaw.eval.metrics import LOWER_IS_BETTER
from thaw.eval.statistics import clustered_p, holm, paired_p


def headroom(per_user: pd.DataFrame, stack: str, members: Sequence[str], metric: str,
             alpha: float = 0.05, clusters: Mapping[tuple[int, int], int] | None = None) -> pd.DataFrame:
    """One row per K: best member, its value, the stack's, the oracle's, the paired test of
    stack against best member (Wilcoxon signed-rank, two-sided), and the headroom captured.
    ``clusters`` (each (K, user)'s target item) adds ``p_clustered`` (``clustered_p``), Holm
    over K as well, which then decides significance."""
    lower = metric in LOWER_IS_BETTER
    rows = []
    values = per_user[per_user["metric"] == metric]
    for k, group in values.groupby("K", sort=True):
        wide = group.pivot_table(index="user", columns="model", values="value")
        present = [m for m in members if m in wide.columns and m != stack]
        if stack not in wide.columns or not present:
            continue
        wide = wide[[stack, *present]].dropna()
        means = wide[present].mean()
        best = means.idxmin() if lower else means.idxmax()
        oracle = (wide[present].min(axis=1) if lower else wide[present].max(axis=1)).mean()
        diff = wide[stack] - wide[best]
        p = paired_p(diff.to_numpy())
        gap = oracle - means[best]
        captured = float((wide[stack].mean() - means[best]) / gap) if abs(gap) > 1e-12 else float("nan")
        worse = (diff.mean() > 0) if lower else (diff.mean() < 0)
        row = {"K": int(k), "metric": metric, "best_member": best, "best": float(means[best]),
               "stack": float(wide[stack].mean()), "oracle": float(oracle),
               "diff": float(diff.mean()), "p_value": p,
               "worse": bool(worse), "headroom_captured": captured, "users": len(wide)}
        if clusters is not None:
            targets = np.array([clusters[(int(k), int(u))] for u in wide.index])
            row["p_clustered"] = clustered_p(diff.to_numpy(), targets)
            row["targets"] = len(np.unique(targets))
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["p_holm"] = holm(table["p_value"].to_numpy())
        if clusters is not None:
            table["p_clustered_holm"] = holm(table["p_clustered"].to_numpy())
        verdict = table["p_clustered_holm" if clusters is not None else "p_holm"]
        table["significantly_worse"] = table["worse"] & (verdict < alpha)
        table["significantly_better"] = ~table["worse"] & (table["diff"] != 0) & (verdict < alpha)
    return table.drop(columns="worse") if len(table) else table


def format_headroom(table: pd.DataFrame) -> str:
    """Plain text: one line per K."""
    if table.empty:
        return "(no stack and members to compare)"
    clustered = "p_clustered_holm" in table
    lines = [f"{'K':>3s}  {'best member':16s} {'best':>7s} {'stack':>7s} {'oracle':>7s} "
             f"{'diff':>8s} {'p (Holm)':>8s}" + (f" {'by target':>9s} {'targets':>7s}" if clustered else "")
             + "  captured"]
    for r in table.itertuples():
        flag = ("  (stack significantly worse)" if r.significantly_worse else
                "  (stack significantly better)" if r.significantly_better else "")
        by_target = f" {r.p_clustered_holm:9.4f} {r.targets:7d}" if clustered else ""
        lines.append(f"{r.K:>3d}  {r.best_member:16s} {r.best:7.4f} {r.stack:7.4f} {r.oracle:7.4f} "
                     f"{r.diff:+8.4f} {r.p_holm:8.4f}{by_target}  {r.headroom_captured:8.1%}{flag}")
    if clustered:
        lines.append("(p (Holm): Wilcoxon over users; by target: resampling target items, which decides)")
    return "\n".join(lines)
