"""Results on disk and on screen: CSV/JSON tables, the cold-to-warm plot, an HTML report.

Every result file records the seed, the versions and the command that produced it.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import platform
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from thaw._version import __version__
from thaw.errors import ThawError
from thaw.eval.episodes import METRICS
from thaw.eval.glance import BASELINES, HEADLINE, glance_html, heat_colour, highlight
from thaw.eval.metrics import LOWER_IS_BETTER
from thaw.eval.protocol import EvalResult

RESULTS_JSON = "results.json"
RESULT_FILES = frozenset({"results.csv", "results_by_item.csv", "per_user.csv", "comparisons.csv",
                          "targets.csv", RESULTS_JSON, "cold_to_warm.png", "report.html"})
"""Every file a results folder may hold (``write_results`` writes them and nothing else)."""


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


def evaluated(meta: Mapping[str, Any]) -> str:
    """How many of the split's test users the tables average over, and why not all: the split's
    own description already gives its count of test users, a second bare count read as a typo."""
    ks = meta.get("ks") or []
    why = f" (those with more than {max(ks)} interactions)" if ks else ""
    return f"{meta.get('test_users', '?')} of them evaluated{why}"


def format_tables(result: EvalResult) -> str:
    """Plain-text K-stratified tables, one per metric, each cell the mean and the half-width of
    its 95% interval (0.706 ±0.05), with random and pop always shown."""
    protocol = result.meta.get("protocol", "")
    lines = [f"== {protocol}: {result.meta.get('split', '')}; {evaluated(result.meta)}; "
             "mean ±half the 95% interval =="]
    for metric in METRICS.get(protocol, sorted(result.table["metric"].unique())):
        if metric not in set(result.table["metric"]):
            continue
        arrow = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        lines.append(f"\n{metric} ({arrow}) by K")
        lines.append(_text_table(result.table, metric, "K"))
    silent = [m for m in dict.fromkeys(result.table["model"])
              if protocol == "rating" and m not in set(result.table.loc[result.table["metric"] == "mae", "model"])]
    if silent:
        lines.append(f"\n({', '.join(silent)} {'does' if len(silent) == 1 else 'do'} not predict ratings: "
                     "no MAE or RMSE; NDCG ranks the query items by score)")
    if len(result.item_table):
        for metric in ("hit@10", "ndcg@10"):
            lines.append(f"\n{metric} by the target item's training interactions N "
                         "(every K's episodes)")
            lines.append(_text_table(result.item_table, metric, "N"))
    lines += [f"\n{stack_summary(result, name)}" for name in result.meta.get("stacks", {})]
    missing = [b for b in BASELINES if b not in set(result.table["model"])]
    if missing:
        lines.append(f"\n(note: baselines {', '.join(missing)} were not run; a number without "
                     "them means little)")
    return "\n".join(lines)


def _text_table(table: pd.DataFrame, metric: str, by: str) -> str:
    """Models as rows, ``by`` (K or N) as columns, cells as ``interval_cell`` writes them."""
    table = table[table["metric"] == metric]
    cells = table.assign(cell=[interval_cell(v, lo, hi) for v, lo, hi in
                               zip(table["value"], table["low"], table["high"], strict=True)])
    wide = cells.pivot(index="model", columns=by, values="cell")
    wide = wide.loc[[m for m in dict.fromkeys(table["model"]) if m in wide.index]].fillna("n/a")
    return "  " + wide.to_string().replace("\n", "\n  ")


def interval_cell(value: float, low: float, high: float) -> str:
    """A mean and half its 95% interval's width, short: ``0.706 ±0.05``."""
    if not np.isfinite(value):
        return "n/a"
    half = (high - low) / 2
    if not np.isfinite(half):
        return f"{value:.3f}"
    return f"{value:.3f} ±{half:.2f}" if half >= 0.005 else f"{value:.3f} ±{half:.3f}"


def stack_summary(result: EvalResult, name: str) -> str:
    """A stack's learned routing table, the share of test requests that tripped its circuit
    breaker at each K, and how it compares with its best member and the per-user oracle."""
    from thaw.eval.headroom import format_headroom, format_pooled, headroom, pooled, target_clusters

    info = result.meta["stacks"][name]
    trips = ", ".join(f"K={k}: {share:.1%}" for k, share in info["trip_share"].items())
    metric = HEADLINE[result.meta["protocol"]]
    clusters = target_clusters(result.targets)
    table = headroom(result.per_user, name, info["members"], metric, clusters=clusters)
    text = (f"{name}: routing learned on validation users\n{info['explain']}\n  breaker tripped: "
            f"{trips}\n\n{name} against its best member (chosen on the test users) and the "
            f"per-user oracle, {metric}:\n" + format_headroom(table))
    if clusters is None and (table["K"] >= 1).sum() >= 2:  # one test over the K >= 1, users resampled
        text += "\n" + format_pooled(pooled(result.per_user, name, info["members"], metric))
    return text


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
    """One panel per metric: value against K, one line per model. Splits after the first get
    their headline metric only, plus the item-side curve (against the target item's training
    interactions N) where there is one. Only a few lines per panel are drawn strong, with their
    bootstrap 95% band: the stack, the best member at each K, the best of each main family and
    random (``thaw.eval.glance.highlight``); the others are thin and grey, out of the legend."""
    panels = []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from thaw.eval.glance import PALETTE

    for i, r in enumerate(results):
        metrics = METRICS[r.meta["protocol"]] if i < 2 else (HEADLINE[r.meta["protocol"]],)
        panels += [(r, m, "K") for m in metrics if m in set(r.table["metric"])]
        if len(r.item_table):
            panels.append((r, "ndcg@10", "N"))
    stacks = list(dict.fromkeys(n for r in results for n in r.meta.get("stacks", {})))
    strong_of = []
    for result, metric, axis in panels:
        source = result.table if axis == "K" else result.item_table.rename(columns={"N": "K"})
        strong_of.append(highlight(source, metric, stacks).strong)
    named = list(dict.fromkeys(m for strong in strong_of for m in strong))
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(n for n in named if n not in stacks)}
    colour |= {n: "black" for n in stacks} | ({"random": "#777777"} if "random" in colour else {})
    cols = min(4, max(1, len(panels)))
    rows = int(np.ceil(len(panels) / cols))
    width = max(4.2 * cols, 8.0)
    ncol = min(len(named) + 1, int(width / 1.35))
    legend_h = 0.3 * int(np.ceil((len(named) + 1) / ncol)) + 0.25  # the legend's strip, below the panels
    height = 3.3 * rows + legend_h + 0.4
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    for ax, (result, metric, axis), strong in zip(axes.flat, panels, strong_of, strict=False):
        source = result.table if axis == "K" else result.item_table.rename(columns={"N": "K"})
        table = source[source["metric"] == metric]
        for model, group in table.groupby("model", sort=False):
            group = group.sort_values("K")
            if model not in strong:
                ax.plot(group["K"], group["value"], "-", color="#cccccc", lw=0.8, zorder=1)
                continue
            envelope = model in stacks  # the stack is drawn on top of its members
            ax.plot(group["K"], group["value"], "--" if model in BASELINES else "-", marker="o",
                    ms=4 if envelope else 3, color=colour[model], lw=2.6 if envelope else 1.6,
                    zorder=5 if envelope else 3)
            ax.fill_between(group["K"], group["low"], group["high"], alpha=0.12, color=colour[model],
                            zorder=2)
        ax.set_title(f"{result.meta.get('split_kind', '')} {result.meta['protocol']}: {metric}",
                     fontsize=10)
        ax.set_xlabel("K (support interactions)" if axis == "K" else
                      "N (the target item's training interactions)")
        ax.set_xticks(sorted(table["K"].unique()))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colour[n], ls="--" if n in BASELINES else "-", marker="o",
                          ms=3, lw=2.6 if n in stacks else 1.6) for n in named]
    handles.append(plt.Line2D([], [], color="#cccccc", lw=0.8))
    fig.legend(handles, [*named, "other models"], loc="lower center", ncol=ncol, frameon=False, fontsize=9)
    fig.suptitle("Cold-to-warm curves: held-out users, metric by number of support interactions",
                 fontsize=11)
    fig.tight_layout(rect=(0, legend_h / height, 1, 1 - 0.35 / height))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_results_json(folder: Path) -> dict[str, Any] | None:
    """A results folder's results.json, or None when it has none (or not one of thaw's)."""
    try:
        payload = json.loads((Path(folder) / RESULTS_JSON).read_text())
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and "provenance" in payload else None


def write_results(results: Sequence[EvalResult], out: str | Path, *, seed: int,
                  command: Sequence[str] | None = None, title: str = "thaw results",
                  params: Mapping[str, Mapping[str, Any]] | None = None,
                  settings: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write results.csv, per_user.csv, comparisons.csv, results.json, a PNG and report.html.
    ``params`` are the hyperparameters set by name (``--param``), ``settings`` the command's
    options (what tells a rerun from another command), both recorded in results.json.

    The files are written to a temporary folder beside ``out``, which then takes the place of
    ``out`` in one step: ``out`` is always either these results, whole, or what it was before.
    Users are named by the data set's own ids."""
    out = Path(out)
    work = out.parent / f".{out.name}.partial-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(out)
        work.mkdir()
    except OSError as exc:
        raise ThawError(f"cannot write the results to {out}: {exc.strerror or exc}") from None
    try:
        names = _write_files(results, work, seed, command, title, params, settings)
        _replace_folder(work, out)
    except OSError as exc:
        raise ThawError(f"cannot write the results to {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already when all went well
    return {name: out / name for name in names}


def _write_files(results: Sequence[EvalResult], out: Path, seed: int, command: Sequence[str] | None,
                 title: str, params: Mapping[str, Mapping[str, Any]] | None,
                 settings: Mapping[str, Any] | None) -> list[str]:
    prov = provenance(seed, command)

    def tagged(frame_of: str) -> pd.DataFrame:
        frames = [_raw_ids(r, getattr(r, frame_of), frame_of).assign(
            split=r.meta.get("split_kind", ""), protocol=r.meta["protocol"]) for r in results]
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    table = tagged("table")
    table = table[["split", "protocol", "model", "K", "metric", "value", "low", "high", "users"]]
    by_item = tagged("item_table")
    written = ["results.csv", "per_user.csv", "comparisons.csv"]
    table.to_csv(out / "results.csv", index=False, float_format="%.6g")
    tagged("per_user").to_csv(out / "per_user.csv", index=False, float_format="%.6g")
    tagged("comparisons").to_csv(out / "comparisons.csv", index=False, float_format="%.6g")
    if len(by_item):
        written.append("results_by_item.csv")
        by_item.to_csv(out / "results_by_item.csv", index=False, float_format="%.6g")
    targets = tagged("targets")
    if len(targets):
        written.append("targets.csv")
        targets.to_csv(out / "targets.csv", index=False)
    payload = {
        "provenance": prov,
        "settings": dict(settings) if settings is not None else None,
        "params": {model: dict(values) for model, values in (params or {}).items()},
        "runs": [{"meta": r.meta, "warnings": r.warnings,
                  "timings": r.timings.to_dict(orient="records")} for r in results],
        "results": json.loads(table.to_json(orient="records")),
    }
    if settings is None:
        del payload["settings"]
    (out / RESULTS_JSON).write_text(json.dumps(payload, indent=2))
    plot = plot_cold_to_warm(results, out / "cold_to_warm.png")
    (out / "report.html").write_text(render_html(results, plot, prov, title))
    return [*written, RESULTS_JSON, "cold_to_warm.png", "report.html"]


def _raw_ids(result: EvalResult, frame: pd.DataFrame, frame_of: str) -> pd.DataFrame:
    """per_user and targets with each user as the data set names them (the frames hold
    internal indices)."""
    if frame_of not in ("per_user", "targets") or result.user_ids is None or not len(frame):
        return frame
    ids = np.asarray(result.user_ids, dtype=object)
    return frame.assign(user=ids[frame["user"].to_numpy(dtype=np.int64)])


def _remove_leftovers(out: Path) -> None:
    """The temporary folders of runs that were killed (SIGKILL) while writing ``out``."""
    for folder in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = folder.name[len(out.name) + 2:].partition("-")
        if kind in ("partial", "old") and pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had this pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _replace_folder(new: Path, out: Path) -> None:
    """``new`` takes the place of ``out`` (which may not exist): the old folder is moved aside,
    the new one moved in, then the old one deleted, with stop signals held back meanwhile."""
    aside = out.parent / f".{out.name}.old-{os.getpid()}"
    with _signals_held():
        had = out.exists()
        if had:
            out.rename(aside)
        try:
            new.rename(out)
        except OSError:
            if had:
                aside.rename(out)
            raise
        if had:
            shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block is done (where the platform can)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def render_html(results: Sequence[EvalResult], plot: Path, prov: dict[str, Any], title: str) -> str:
    """A self-contained page that opens with the results at a glance (``thaw.eval.glance``:
    the cold-to-warm curve, a verdict per K, the stack's routing, a heat map), then every table
    (collapsed; best model in bold, significance marks, cells shaded per column). The PNG of
    the curves is linked, not embedded, which keeps the page small."""
    from thaw.eval.glance import CSS, SCRIPT

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<meta name='viewport' content='width=device-width'><style>"
             "body{font-family:sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}td.m{text-align:left}"
             ".base{color:#777}.warn{background:#fff3cd;padding:0.5em 1em;border:1px solid #e0c060}"
             "details{margin:0.5em 0}summary{cursor:pointer;font-weight:600;font-size:1.1em}"
             f"{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<p>Held-out users only; the first K interactions are the support. Values are means "
             "over users with bootstrap 95% intervals; random and pop are sanity baselines.</p>"]
    for i, result in enumerate(results):
        parts.append(f"<h2>{html.escape(result.meta.get('split_kind', ''))} split, "
                     f"{html.escape(result.meta['protocol'])}</h2><p>"
                     f"{html.escape(result.meta.get('split', ''))}; "
                     f"{evaluated(result.meta)}; candidates: "
                     f"{html.escape(str(result.meta.get('candidates')))}</p>")
        for note in result.warnings:
            parts.append(f"<p class='warn'>warning: {html.escape(note)}</p>")
        parts.append(glance_html(result, f"curve{i}"))
        parts.append("<details><summary>Every table</summary><p><b>Bold</b> marks the best model "
                     "at each K; <sup>*</sup> marks a lead over every other model that is significant "
                     "(paired Wilcoxon signed-rank over the same users, Holm-corrected p &lt; 0.05 "
                     "within each K and metric; comparisons.csv has every pair).</p>")
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
        parts.append("</details>")
    parts.append(f"<details><summary>Every metric's curve (PNG)</summary><p><a href='{plot.name}'>"
                 f"<img style='max-width:100%' alt='cold-to-warm curves' src='{plot.name}'></a></p></details>")
    parts.append("<details><summary>Provenance</summary><pre>" + html.escape(json.dumps(prov, indent=2))
                 + f"</pre></details><script>{SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _metric_table(result: EvalResult, metric: str) -> str:
    """One metric's table: models by K, each cell the mean and its interval, shaded from the
    column's worst (white) to its best (blue); the best in bold, starred when significant."""
    table = result.table[result.table["metric"] == metric]
    ks = sorted(table["K"].unique())
    comp = result.comparisons
    lower = metric in LOWER_IS_BETTER
    order = list(dict.fromkeys(table["model"]))
    wide = {c: table.pivot(index="model", columns="K", values=c).reindex(order) for c in ("value", "low", "high")}
    rows = [f"<h3>{html.escape(metric)} ({'lower' if lower else 'higher'} is better)</h3><table>"
            "<tr><th>model</th>" + "".join(f"<th>K={k}</th>" for k in ks) + "</tr>"]
    best, starred = {}, set()
    for k in ks:
        values = wide["value"][k].dropna() if k in wide["value"] else pd.Series(dtype=float)
        if len(values) < 2:
            continue
        best[k] = values.idxmin() if lower else values.idxmax()
        if _leads_significantly(comp, k, metric, best[k], set(values.index)):
            starred.add(k)
    extremes = {k: (wide["value"][k].min(), wide["value"][k].max()) for k in ks if k in wide["value"]}
    for model in order:
        cells = []
        for k in ks:
            value = wide["value"].at[model, k] if k in wide["value"] else np.nan
            if np.isnan(value):
                cells.append("<td>n/a</td>")
                continue
            low, high = wide["low"].at[model, k], wide["high"].at[model, k]
            text = f"{value:.4f} <small>[{low:.3f}, {high:.3f}]</small>"
            if best.get(k) == model:
                text = f"<b>{value:.4f}</b>" + ("<sup>*</sup>" if k in starred else "") + \
                    f" <small>[{low:.3f}, {high:.3f}]</small>"
            cells.append(f"<td style='background:{heat_colour(value, *extremes[k], lower)}'>{text}</td>")
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
    mine = c[(c["model_a"] == best) | (c["model_b"] == best)]
    won = {b if a == best else a: better == best and bool(significant) for a, b, better, significant in
           zip(mine["model_a"], mine["model_b"], mine["better"], mine["significant"], strict=True)}
    return all(won.get(other, False) for other in models - {best})
