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
from thaw.eval.statistics import clustered_means, clustered_p, holm, paired_p


def target_clusters(targets: pd.DataFrame | None) -> dict[tuple[int, int], int] | None:
    """``headroom``'s clusters from an evaluation's ``targets`` frame (K, user, item), or None
    where it recorded none (new users, ratings)."""
    if targets is None or not len(targets):
        return None
    return {(int(k), u): i for k, u, i in targets[["K", "user", "item"]].itertuples(index=False)}


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
            targets = np.array([clusters[(int(k), u)] for u in wide.index])
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


def persistence(per_user: pd.DataFrame, members: Sequence[str], metric: str) -> pd.DataFrame:
    """How much of the oracle's headroom follows the user rather than the single target.

    The oracle picks each user's best member on the very target it is scored on, so with one
    target per episode part of its lead is luck. Here each user's member at K is the one best
    on that user's own episodes at the other K (their other targets; ties to the member best
    on average there): a choice no stacker could make at request time, but the most a per-user
    preference that persists from one target to the next could give. One row per K: the best
    member (after the fact, as in ``headroom``), the oracle, this choice, and the share of the
    oracle's headroom it captures."""
    lower = metric in LOWER_IS_BETTER
    sign = -1.0 if lower else 1.0
    values = per_user[(per_user["metric"] == metric) & per_user["model"].isin(members)]
    cube = values.pivot_table(index=["user", "K"], columns="model", values="value").dropna()
    ks = sorted(cube.index.get_level_values("K").unique())
    users = cube.index.get_level_values("user")
    complete = users.value_counts()
    cube = cube[users.isin(complete[complete == len(ks)].index)]  # users scored at every K
    rows = []
    for k in ks:
        here = cube.xs(k, level="K")
        elsewhere = cube[cube.index.get_level_values("K") != k].groupby(level="user").mean()
        elsewhere = elsewhere.loc[here.index] * sign
        tie_break = elsewhere.mean() * 1e-9  # a user's tie goes to the member better on average
        chosen = (elsewhere + tie_break).idxmax(axis=1)
        persistent = np.array([here.at[u, m] for u, m in chosen.items()])
        means = here.mean()
        best = means.idxmin() if lower else means.idxmax()
        oracle = (here.min(axis=1) if lower else here.max(axis=1)).mean()
        gap = oracle - means[best]
        rows.append({"K": int(k), "metric": metric, "best_member": best, "best": float(means[best]),
                     "persistent": float(persistent.mean()), "oracle": float(oracle),
                     "captured": float((persistent.mean() - means[best]) / gap) if abs(gap) > 1e-12 else float("nan"),
                     "users": len(here)})
    return pd.DataFrame(rows)


def format_persistence(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no members scored at every K)"
    lines = [f"{'K':>3s}  {'best member':16s} {'best':>7s} {'per-user':>8s} {'oracle':>7s}  captured"]
    for r in table.itertuples():
        lines.append(f"{r.K:>3d}  {r.best_member:16s} {r.best:7.4f} {r.persistent:8.4f} {r.oracle:7.4f}  "
                     f"{r.captured:8.1%}")
    lines.append("(per-user: each user's member chosen on their own episodes at the other K; "
                 f"{int(table['users'].iloc[0])} users)")
    return "\n".join(lines)


def pooled(per_user: pd.DataFrame, stack: str, members: Sequence[str], metric: str,
           min_k: int = 1) -> dict[str, float | int | str]:
    """The stack against its best member over every K >= ``min_k`` at once: one test where
    ``headroom`` makes one per K, so it can see a small lead that holds across K. The best
    member is chosen after the fact, on these episodes; each user's episodes are resampled
    together (``clustered_means`` over users), as they are not independent."""
    lower = metric in LOWER_IS_BETTER
    values = per_user[(per_user["metric"] == metric) & (per_user["K"] >= min_k)]
    wide = values.pivot_table(index=["K", "user"], columns="model", values="value")
    present = [m for m in members if m in wide.columns and m != stack]
    wide = wide[[stack, *present]].dropna()
    means = wide[present].mean()
    best = means.idxmin() if lower else means.idxmax()
    diff = (wide[stack] - wide[best]).to_numpy(dtype=np.float64)
    users = wide.index.get_level_values("user").to_numpy()
    low, high = np.percentile(clustered_means(diff, users), [2.5, 97.5])
    return {"best_member": best, "best": float(means[best]), "stack": float(wide[stack].mean()),
            "diff": float(diff.mean()), "low": float(low), "high": float(high),
            "p": clustered_p(diff, users), "episodes": len(diff), "users": len(np.unique(users)),
            "min_k": min_k}


def format_pooled(row: Mapping[str, float | int | str]) -> str:
    return (f"over K >= {row['min_k']} at once ({row['episodes']} episodes of {row['users']} users, "
            f"resampled by user): {row['best_member']} {row['best']:.4f}, stack {row['stack']:.4f}, "
            f"diff {row['diff']:+.4f} [{row['low']:+.4f}, {row['high']:+.4f}], p {row['p']:.4f}")
