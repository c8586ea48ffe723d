"""Results on disk and on screen: CSV/JSON tables, the cold-to-warm plot, an HTML report.

Every result file records the seed, the versions and the command that produced it.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from thaw import __version__  # noqa: E402
from thaw.eval.protocol import LOWER_IS_BETTER, METRICS, EvalResult  # noqa: E402

BASELINES = ("random", "pop")
HEADLINE = {"next-item": "ndcg@10", "rating": "mae"}


def provenance(seed: int, command: Sequence[str] | None = None) -> dict[str, Any]:
    """What produced a result: seed, versions, command line, machine, time."""
    import sklearn
    import torch

    return {
        "thaw": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "pandas": pd.__version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__,
        "seed": seed, "command": " ".join(command if command is not None else sys.argv),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def wide_table(result: EvalResult, metric: str) -> pd.DataFrame:
    """Models as rows, K as columns, for one metric."""
    table = result.table[result.table["metric"] == metric]
    wide = table.pivot(index="model", columns="K", values="value")
    order = [m for m in dict.fromkeys(result.table["model"]) if m in wide.index]
    return wide.loc[order]


def format_tables(result: EvalResult) -> str:
    """Plain-text K-stratified tables, one per metric, with random and pop always shown."""
    protocol = result.meta.get("protocol", "")
    lines = [f"== {protocol}: {result.meta.get('split', '')}; "
             f"{result.meta.get('test_users', '?')} test users =="]
    for metric in METRICS.get(protocol, sorted(result.table["metric"].unique())):
        if metric not in set(result.table["metric"]):
            continue
        wide = wide_table(result, metric)
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        lines.append(f"\n{metric} ({arrow}) by K")
        text = wide.to_string(float_format=lambda v: f"{v:.4f}", na_rep="n/a")
        lines.append("  " + text.replace("\n", "\n  "))
    if len(result.item_table):
        for metric in ("hit@10", "ndcg@10"):
            wide = result.item_table[result.item_table["metric"] == metric].pivot(
                index="model", columns="N", values="value")
            wide = wide.loc[[m for m in dict.fromkeys(result.item_table["model"]) if m in wide.index]]
            lines.append(f"\n{metric} by the target item's training interactions N "
                         "(every K's episodes)")
            lines.append("  " + wide.to_string(float_format=lambda v: f"{v:.4f}", na_rep="n/a")
                         .replace("\n", "\n  "))
    lines += [f"\n{stack_summary(result, name)}" for name in result.meta.get("stacks", {})]
    missing = [b for b in BASELINES if b not in set(result.table["model"])]
    if missing:
        lines.append(f"\n(note: baselines {', '.join(missing)} were not run; a number without "
                     "them means little)")
    return "\n".join(lines)


def stack_summary(result: EvalResult, name: str) -> str:
    """A stack's learned routing table, the share of test requests that tripped its circuit
    breaker at each K, and how it compares with its best member and the per-user oracle."""
    from thaw.stack.headroom import format_headroom, headroom

    info = result.meta["stacks"][name]
    trips = ", ".join(f"K={k}: {share:.1%}" for k, share in info["trip_share"].items())
    metric = HEADLINE[result.meta["protocol"]]
    table = headroom(result.per_user, name, info["members"], metric)
    return (f"{name}: routing learned on validation users\n{info['explain']}\n  breaker tripped: "
            f"{trips}\n\n{name} against its best member (chosen on the test users) and the "
            f"per-user oracle, {metric}:\n" + format_headroom(table))


def markdown_table(table: pd.DataFrame, metric: str) -> str:
    """One metric as a markdown table: models as rows, K as columns, mean [95% interval]."""
    table = table[table["metric"] == metric]
    ks = sorted(table["K"].unique())
    lines = [f"| {metric} | " + " | ".join(f"K={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for model in dict.fromkeys(table["model"]):
        cells = []
        for k in ks:
            row = table[(table["model"] == model) & (table["K"] == k)]
            cells.append("n/a" if row.empty else
                         f"{row['value'].iloc[0]:.3f} [{row['low'].iloc[0]:.3f}, {row['high'].iloc[0]:.3f}]")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_cold_to_warm(results: Sequence[EvalResult], path: Path) -> Path:
    """One panel per metric: value against K with the bootstrap 95% band, one line per model.
    Splits after the first get their headline metric only, plus the item-side curve (against
    the target item's training interactions N) where there is one."""
    panels = []
    for i, r in enumerate(results):
        metrics = METRICS[r.meta["protocol"]] if i < 2 else (HEADLINE[r.meta["protocol"]],)
        panels += [(r, m, "K") for m in metrics if m in set(r.table["metric"])]
        if len(r.item_table):
            panels.append((r, "ndcg@10", "N"))
    cols = min(4, max(1, len(panels)))
    rows = int(np.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    names = list(dict.fromkeys(m for r in results for m in r.table["model"]))
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {name: palette(i % palette.N) for i, name in enumerate(names)}
    stacks = {n for r in results for n in r.meta.get("stacks", {})}
    colour |= {n: "black" for n in stacks}
    for ax, (result, metric, axis) in zip(axes.flat, panels, strict=False):  # the grid may have spare axes
        source = result.table if axis == "K" else result.item_table.rename(columns={"N": "K"})
        table = source[source["metric"] == metric]
        for model, group in table.groupby("model", sort=False):
            group = group.sort_values("K")
            style = "--" if model in BASELINES else "-"
            envelope = model in stacks  # the stack is drawn on top of its members
            ax.plot(group["K"], group["value"], style, marker="o", ms=4 if envelope else 3,
                    label=model, color="black" if envelope else colour[model],
                    lw=2.6 if envelope else 1.2, zorder=5 if envelope else 2)
            ax.fill_between(group["K"], group["low"], group["high"], alpha=0.15,
                            color=colour[model])
        ax.set_title(f"{result.meta.get('split_kind', '')} {result.meta['protocol']}: {metric}",
                     fontsize=10)
        ax.set_xlabel("K (support interactions)" if axis == "K" else
                      "N (the target item's training interactions)")
        ax.set_xticks(sorted(table["K"].unique()))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colour[n], ls="--" if n in BASELINES else "-", marker="o",
                          ms=3, lw=2.6 if n in stacks else 1.2) for n in names]
    fig.legend(handles, names, loc="lower center", ncol=min(8, len(names)), frameon=False)
    fig.suptitle("Cold-to-warm curve: held-out users, metric by number of support interactions")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_results(results: Sequence[EvalResult], out: str | Path, *, seed: int,
                  command: Sequence[str] | None = None, title: str = "thaw results",
                  params: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Write results.csv, per_user.csv, comparisons.csv, results.json, a PNG and report.html.
    ``params`` are the hyperparameters set by name (``--param``), recorded in results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prov = provenance(seed, command)

    def tagged(frame_of: str) -> pd.DataFrame:
        frames = [getattr(r, frame_of).assign(split=r.meta.get("split_kind", ""),
                                              protocol=r.meta["protocol"]) for r in results]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    table = tagged("table")
    table = table[["split", "protocol", "model", "K", "metric", "value", "low", "high", "users"]]
    by_item = tagged("item_table")
    paths = {
        "results.csv": out / "results.csv", "per_user.csv": out / "per_user.csv",
        "comparisons.csv": out / "comparisons.csv", "results.json": out / "results.json",
        "cold_to_warm.png": out / "cold_to_warm.png", "report.html": out / "report.html",
    }
    table.to_csv(paths["results.csv"], index=False, float_format="%.6g")
    tagged("per_user").to_csv(paths["per_user.csv"], index=False, float_format="%.6g")
    tagged("comparisons").to_csv(paths["comparisons.csv"], index=False, float_format="%.6g")
    if len(by_item):
        paths["results_by_item.csv"] = out / "results_by_item.csv"
        by_item.to_csv(paths["results_by_item.csv"], index=False, float_format="%.6g")
    payload = {
        "provenance": prov,
        "params": {model: dict(values) for model, values in (params or {}).items()},
        "runs": [{"meta": r.meta, "warnings": r.warnings,
                  "timings": r.timings.to_dict(orient="records")} for r in results],
        "results": json.loads(table.to_json(orient="records")),
    }
    paths["results.json"].write_text(json.dumps(payload, indent=2))
    plot_cold_to_warm(results, paths["cold_to_warm.png"])
    paths["report.html"].write_text(render_html(results, paths["cold_to_warm.png"], prov, title))
    return paths


def render_html(results: Sequence[EvalResult], plot: Path, prov: dict[str, Any], title: str) -> str:
    """A self-contained page: tables with the best model in bold, significance marks, the plot."""
    image = base64.b64encode(plot.read_bytes()).decode()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}td.m{text-align:left}"
             ".base{color:#777}.warn{background:#fff3cd;padding:0.5em 1em;border:1px solid #e0c060}"
             "</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p>Held-out users only; the first K interactions are the support. Values are means "
             "over users with bootstrap 95% intervals. <b>Bold</b> marks the best model at each K; "
             "<sup>*</sup> marks a lead over every other model that is significant "
             "(paired Wilcoxon signed-rank over the same users, Holm-corrected p &lt; 0.05 within "
             "each K and metric; comparisons.csv has every pair). Random and pop "
             "(grey) are sanity baselines.</p>"]
    for result in results:
        parts.append(f"<h2>{html.escape(result.meta.get('split_kind', ''))} split, "
                     f"{html.escape(result.meta['protocol'])}</h2><p>"
                     f"{html.escape(result.meta.get('split', ''))}; "
                     f"{result.meta.get('test_users')} test users; candidates: "
                     f"{html.escape(str(result.meta.get('candidates')))}</p>")
        for note in result.warnings:
            parts.append(f"<p class='warn'>warning: {html.escape(note)}</p>")
        for metric in METRICS[result.meta["protocol"]]:
            if metric not in set(result.table["metric"]):
                continue
            parts.append(_metric_table(result, metric))
        if len(result.item_table):
            parts.append("<h3>By the target item's training interactions N (every K's "
                         "episodes)</h3>" + result.item_table.pivot_table(
                             index="model", columns=["metric", "N"], values="value", sort=False
                         ).to_html(float_format="%.4f"))
        for name in result.meta.get("stacks", {}):
            parts.append(f"<h3>{html.escape(name)}: learned routing table</h3><pre>"
                         f"{html.escape(stack_summary(result, name))}</pre>")
        parts.append("<h3>Time</h3>" + result.timings.to_html(index=False, float_format="%.2f"))
    parts.append(f"<h2>Cold-to-warm curve</h2><img style='max-width:100%' "
                 f"src='data:image/png;base64,{image}'>")
    parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(prov, indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _metric_table(result: EvalResult, metric: str) -> str:
    table = result.table[result.table["metric"] == metric]
    ks = sorted(table["K"].unique())
    comp = result.comparisons
    lower = metric in LOWER_IS_BETTER
    rows = [f"<h3>{html.escape(metric)} ({'lower' if lower else 'higher'} is better)</h3><table>"
            "<tr><th>model</th>" + "".join(f"<th>K={k}</th>" for k in ks) + "</tr>"]
    best, starred = {}, set()
    for k in ks:
        values = table[table["K"] == k].dropna(subset=["value"]).set_index("model")["value"]
        if len(values) < 2:
            continue
        best[k] = values.idxmin() if lower else values.idxmax()
        if _leads_significantly(comp, k, metric, best[k], set(values.index)):
            starred.add(k)
    for model in dict.fromkeys(table["model"]):
        cells = []
        for k in ks:
            row = table[(table["model"] == model) & (table["K"] == k)]
            if row.empty or np.isnan(row["value"].iloc[0]):
                cells.append("<td>n/a</td>")
                continue
            value, low, high = row[["value", "low", "high"]].iloc[0]
            text = f"{value:.4f} <small>[{low:.3f}, {high:.3f}]</small>"
            if best.get(k) == model:
                text = f"<b>{value:.4f}</b>" + ("<sup>*</sup>" if k in starred else "") + \
                    f" <small>[{low:.3f}, {high:.3f}]</small>"
            cells.append(f"<td>{text}</td>")
        cls = " base" if model in BASELINES else ""
        rows.append(f"<tr><td class='m{cls}'>{html.escape(model)}</td>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _leads_significantly(comp: pd.DataFrame, k: int, metric: str, best: str, models: set[str]) -> bool:
    """Whether the best model is ahead of every other model at this K and metric, each lead
    significant after Holm's correction (a pair that was not compared cannot earn the mark)."""
    if not len(comp):
        return False
    c = comp[(comp["K"] == k) & (comp["metric"] == metric)]
    for other in models - {best}:
        pair = c[((c["model_a"] == best) & (c["model_b"] == other))
                 | ((c["model_a"] == other) & (c["model_b"] == best))]
        if pair.empty or not (pair["better"].iloc[0] == best and bool(pair["significant"].iloc[0])):
            return False
    return True
