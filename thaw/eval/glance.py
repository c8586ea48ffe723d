"""The results at a glance: what the report opens with, before its full tables.

The cold-to-warm curve of the headline metric as inline SVG (a few lines strong, the rest
faint and named on hover), one verdict line per K, the stack's routing, and a heat map of the
headline metric (models by K). Everything here is plain HTML, SVG and a few lines of inline
JavaScript, so the report works offline and the service can show the same page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from thaw.eval.metrics import LOWER_IS_BETTER, bootstrap_interval
from thaw.eval.statistics import clustered_means

HEADLINE = {"next-item": "ndcg@10", "rating": "mae"}
BASELINES = ("random", "pop")

# A model's family, by its registry name (or the name before a '-' variant suffix).
FAMILIES = {
    "popularity": ("pop", "segment-pop", "bias"),
    "CF": ("mf", "bpr", "fm", "dssm", "youtubednn", "widedeep", "deepfm", "coldwarm"),
    "sequential": ("sasrec", "gru4rec"),
    "meta-learning": ("melu", "maml", "fomaml", "finetune", "hml", "metatl", "metacsr"),
    "content": ("content",),
    "transfer": ("emcdr", "ptupcdr", "tgt", "cmf"),
}
STRONG_FAMILIES = ("popularity", "CF", "sequential", "meta-learning", "content")
# Okabe-Ito colours (told apart with most colour-vision deficiencies); the stack is black.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C6D31", "#7F3C8D")


def family_of(model: str) -> str | None:
    """The family a model name belongs to (``hml-soft`` is meta-learning), or None."""
    base = model.split(":", 1)[0]
    for family, names in FAMILIES.items():
        if base in names or any(base.startswith(f"{n}-") for n in names if n not in ("pop",)):
            return family
    return None


def headline(result: object) -> str:
    meta = result.meta  # type: ignore[attr-defined]
    return HEADLINE.get(meta.get("protocol", ""), "ndcg@10")


@dataclass(frozen=True)
class Highlight:
    """Which lines of a curve are drawn strong, and why (``reasons``: model -> words)."""

    strong: list[str]
    stacks: list[str]
    reasons: dict[str, str]
    colour: dict[str, str]


def wide_headline(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Models (in the table's order) by K of one metric's means, NaN where absent."""
    rows = table[table["metric"] == metric]
    wide = rows.pivot_table(index="model", columns="K", values="value", sort=False)
    return wide.loc[[m for m in dict.fromkeys(rows["model"]) if m in wide.index]]


def highlight(table: pd.DataFrame, metric: str, stacks: Sequence[str]) -> Highlight:
    """The stacks, the best member at each K, the best of each main family (by its mean over
    K) and the random baseline are strong; every other model is faint."""
    wide = wide_headline(table, metric)
    lower = metric in LOWER_IS_BETTER
    stacks = [s for s in stacks if s in wide.index]
    members = wide.loc[[m for m in wide.index if m not in stacks and m.split(":", 1)[0] not in stacks]]
    reasons: dict[str, list[str]] = {s: ["the stack"] for s in stacks}
    if len(members):
        for k in wide.columns:
            column = members[k].dropna()
            if len(column):
                best = column.idxmin() if lower else column.idxmax()
                reasons.setdefault(best, []).append(f"best at K={k}")
        overall = members.mean(axis=1, skipna=True)
        for family in STRONG_FAMILIES:
            inside = overall[[family_of(m) == family for m in overall.index]].dropna()
            if len(inside):
                best = inside.idxmin() if lower else inside.idxmax()
                reasons.setdefault(best, []).append(f"best {family}")
        if "random" in members.index:
            reasons.setdefault("random", []).append("sanity baseline")
    strong = [m for m in wide.index if m in reasons]
    colour, others = {}, [m for m in wide.index if m not in stacks]
    for i, model in enumerate(others):  # strong lines take the distinct colours first
        rank = strong.index(model) if model in strong else len(strong) + i
        colour[model] = PALETTE[rank % len(PALETTE)] if model in strong else _faint_colour(i)
    colour |= {s: "#000000" for s in stacks}
    if "random" in colour:
        colour["random"] = "#777777"
    return Highlight(strong, stacks, {m: ", ".join(r) for m, r in reasons.items()}, colour)


def _faint_colour(i: int) -> str:
    """A muted colour for a line drawn faint (shown in its colour on hover or when picked)."""
    hue = (i * 47) % 360
    return f"hsl({hue},45%,45%)"


# --- the curve -------------------------------------------------------------------------------

WIDTH, HEIGHT = 820, 360
LEFT, RIGHT, TOP, BOTTOM = 56, 170, 16, 44


def curve_svg(table: pd.DataFrame, metric: str, stacks: Sequence[str], ident: str = "c") -> str:
    """The cold-to-warm curve of ``metric`` as an SVG element plus its legend (HTML): strong
    lines with their 95% band and a label at the right end, faint lines named on hover; a
    legend checkbox per model moves it between faint and strong."""
    wide = wide_headline(table, metric)
    if wide.empty:
        return "<p>(no results for the curve)</p>"
    rows = table[table["metric"] == metric]
    lows = rows.pivot_table(index="model", columns="K", values="low", sort=False)
    highs = rows.pivot_table(index="model", columns="K", values="high", sort=False)
    chosen = highlight(table, metric, stacks)
    ks = list(wide.columns)
    bands = [frame.reindex(chosen.strong).to_numpy().ravel() for frame in (lows, highs)]
    values = np.concatenate([wide.to_numpy().ravel(), *bands])  # the strong lines' bands fit too
    values = values[np.isfinite(values)]
    if not len(values):
        return "<p>(no finite values for the curve)</p>"
    low, high = float(values.min()), float(values.max())
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 0.05
    low, high = low - pad, high + pad
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (len(ks) - 1) if len(ks) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - (v - low) / (high - low))

    parts = [f"<svg id='{ident}' class='curve' viewBox='0 0 {WIDTH} {HEIGHT}' width='{WIDTH}' "
             f"height='{HEIGHT}' role='img' aria-label='{html.escape(metric)} by K'>"
             f"<clipPath id='{ident}-plot'><rect x='{LEFT - 4}' y='{TOP}' width='{plot_w + 8}' "
             f"height='{plot_h}'/></clipPath>"]
    for tick in _ticks(low, high):
        parts.append(f"<line class='grid' x1='{LEFT}' x2='{LEFT + plot_w}' y1='{y(tick):.1f}' "
                     f"y2='{y(tick):.1f}'/><text class='tick' x='{LEFT - 6}' y='{y(tick) + 4:.1f}' "
                     f"text-anchor='end'>{tick:.3g}</text>")
    for i, k in enumerate(ks):
        parts.append(f"<text class='tick' x='{x(i):.1f}' y='{TOP + plot_h + 16}' "
                     f"text-anchor='middle'>{k}</text>")
    parts.append(f"<text class='axis' x='{LEFT + plot_w / 2:.0f}' y='{HEIGHT - 6}' text-anchor='middle'>"
                 f"K (the new user's support interactions)</text>"
                 f"<text class='axis' transform='rotate(-90)' x='{-(TOP + plot_h / 2):.0f}' y='14' "
                 f"text-anchor='middle'>{html.escape(metric)} ({'lower' if metric in LOWER_IS_BETTER else 'higher'}"
                 " is better)</text>")
    order = [m for m in wide.index if m not in chosen.strong] + [m for m in chosen.strong if m not in chosen.stacks] \
        + chosen.stacks  # strong lines over faint ones, the stack on top
    labels = []
    for model in order:
        series = wide.loc[model]
        points = [(x(i), y(v)) for i, v in enumerate(series) if np.isfinite(v)]
        if not points:
            continue
        strong = model in chosen.strong
        cls = "line " + ("strong" if strong else "faint") + (" stack" if model in chosen.stacks else "") \
            + (" base" if model in BASELINES else "")
        path = " ".join(f"{'M' if j == 0 else 'L'}{px:.1f},{py:.1f}" for j, (px, py) in enumerate(points))
        band = ""
        if model in lows.index:
            upper = [(x(i), y(v)) for i, v in enumerate(highs.loc[model]) if np.isfinite(v)]
            lower = [(x(i), y(v)) for i, v in enumerate(lows.loc[model]) if np.isfinite(v)]
            if len(upper) == len(lower) == len(points) and len(points) > 1:
                ring = upper + lower[::-1]
                corners = " ".join(f"{px:.1f},{py:.1f}" for px, py in ring)
                band = f"<polygon class='band' clip-path='url(#{ident}-plot)' points='{corners}'/>"
        dots = "".join(f"<circle cx='{px:.1f}' cy='{py:.1f}' r='3'/>" for px, py in points)
        why = chosen.reasons.get(model, "")
        tip = html.escape(f"{model}{f' ({why})' if why else ''}: " + ", ".join(
            f"K={k} {v:.4f}" for k, v in series.items() if np.isfinite(v)))
        parts.append(f"<g class='{cls}' data-model='{html.escape(model)}' style='--c:{chosen.colour[model]}'>"
                     f"<title>{tip}</title>{band}<path d='{path}'/>{dots}</g>")
        if strong:
            labels.append([points[-1][1], model])
    for label_y, model in _spread(labels, TOP, TOP + plot_h):
        parts.append(f"<text class='label' data-model='{html.escape(model)}' x='{LEFT + plot_w + 8}' "
                     f"y='{label_y + 4:.1f}' style='fill:{chosen.colour[model]}'>{html.escape(model)}</text>")
    parts.append("</svg>")
    legend = ["<div class='legend' data-for='" + ident + "'>"]
    for model in wide.index:
        checked = " checked" if model in chosen.strong else ""
        legend.append(f"<label title='{html.escape(chosen.reasons.get(model, 'drawn faint: tick to draw it strong'))}'>"
                      f"<input type='checkbox' data-model='{html.escape(model)}'{checked}>"
                      f"<span style='color:{chosen.colour[model]}'>&#9632;</span> {html.escape(model)}</label>")
    legend.append("</div>")
    return "\n".join(parts) + "\n" + "".join(legend)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values between ``low`` and ``high``."""
    span = high - low
    step = 10 ** np.floor(np.log10(span / count))
    for factor in (1, 2, 2.5, 5, 10):
        if span / (step * factor) <= count:
            step *= factor
            break
    first = np.ceil(low / step)
    last = np.floor(high / step + 1e-9)
    return [float(n * step) + 0.0 for n in np.arange(first, last + 1)]  # + 0.0: no "-0" tick


def _spread(labels: list[list], top: float, bottom: float, gap: float = 13.0) -> list[tuple[float, str]]:
    """Label heights moved apart so no two overlap, kept inside the plot."""
    labels = sorted(labels, key=lambda item: item[0])
    for i in range(1, len(labels)):
        labels[i][0] = max(labels[i][0], labels[i - 1][0] + gap)
    overflow = (labels[-1][0] - bottom) if labels else 0
    if overflow > 0:
        for item in labels:
            item[0] -= overflow
        for i in range(len(labels) - 2, -1, -1):
            labels[i][0] = min(labels[i][0], labels[i + 1][0] - gap)
    return [(max(top, v), m) for v, m in labels]


# --- the verdicts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One K's answer: ``winner`` against ``other`` by ``diff`` (winner's sense: positive is
    better), its 95% bootstrap interval, the Holm-corrected p and whether it is significant."""

    k: int
    metric: str
    first: str
    second: str
    first_value: float
    second_value: float
    diff: float
    low: float
    high: float
    p_holm: float
    significant: bool
    against: str  # "best member" (a stack against its best member) or "runner-up"
    test: str = "paired Wilcoxon"  # or "resampling target items" (users sharing new-item targets)

    def sentence(self) -> str:
        sign = "lower" if self.metric in LOWER_IS_BETTER else "higher"
        if self.against == "best member":
            head = (f"K={self.k}: {self.first} {self.first_value:.4f} against its best member "
                    f"{self.second} {self.second_value:.4f}")
        else:
            head = (f"K={self.k}: {self.first} leads with {self.first_value:.4f}, runner-up "
                    f"{self.second} {self.second_value:.4f}")
        outcome = ("significant" if self.significant else "not significant")
        return (f"{head}; difference {self.diff:+.4f} [{self.low:+.4f}, {self.high:+.4f}] ({sign} is "
                f"better), {outcome} ({self.test}, Holm p = {self.p_holm:.3g})")

    @property
    def outcome(self) -> str:
        """win, loss or tie, for the first model named."""
        if not self.significant:
            return "tie"
        better = self.diff < 0 if self.metric in LOWER_IS_BETTER else self.diff > 0
        return "win" if better else "loss"


def verdicts(result: object, stack: str | None = None) -> list[Verdict]:
    """Per K: the stack against its best member (chosen after the fact on the test users),
    or, without a stack, the leader against the runner-up (among every model evaluated)."""
    from thaw.eval.headroom import headroom, target_clusters

    metric = headline(result)
    per_user = result.per_user  # type: ignore[attr-defined]
    meta = result.meta  # type: ignore[attr-defined]
    if not len(per_user):
        return []
    values = per_user[per_user["metric"] == metric]
    out = []
    if stack is not None:
        clusters = target_clusters(getattr(result, "targets", None))
        table = headroom(per_user, stack, meta["stacks"][stack]["members"], metric, clusters=clusters)
        for row in table.itertuples():
            diff = _paired(values, row.K, stack, row.best_member)
            if clusters is None:
                (low, high), p, test = bootstrap_interval(diff.to_numpy(), seed=0), row.p_holm, "paired Wilcoxon"
            else:  # users share new items as targets: the uncertainty is the targets'
                targets = np.array([clusters[(int(row.K), u)] for u in diff.index])
                low, high = np.percentile(clustered_means(diff.to_numpy(), targets), [2.5, 97.5])
                p, test = row.p_clustered_holm, "resampling target items"
            out.append(Verdict(int(row.K), metric, stack, row.best_member, row.stack, row.best,
                               float(row.diff), float(low), float(high), float(p),
                               bool(row.significantly_better or row.significantly_worse), "best member",
                               test))
        return out
    comparisons = result.comparisons  # type: ignore[attr-defined]
    lower = metric in LOWER_IS_BETTER
    means = wide_headline(result.table, metric)  # type: ignore[attr-defined]
    for k in means.columns:
        column = means[k].dropna().sort_values(ascending=lower, kind="stable")
        if len(column) < 2:
            continue
        first, second = column.index[0], column.index[1]
        diff = _paired(values, k, first, second)
        low, high = bootstrap_interval(diff.to_numpy(), seed=0)
        pair = comparisons[(comparisons["K"] == k) & (comparisons["metric"] == metric)
                           & (((comparisons["model_a"] == first) & (comparisons["model_b"] == second))
                              | ((comparisons["model_a"] == second) & (comparisons["model_b"] == first)))] \
            if len(comparisons) else comparisons
        p = float(pair["p_holm"].iloc[0]) if len(pair) else float("nan")
        significant = bool(pair["significant"].iloc[0]) if len(pair) else False
        out.append(Verdict(int(k), metric, first, second, float(column.iloc[0]), float(column.iloc[1]),
                           float(np.nanmean(diff)) if len(diff) else float("nan"), low, high, p,
                           significant, "runner-up"))
    return out


def _paired(values: pd.DataFrame, k: int, a: str, b: str) -> pd.Series:
    """Per-user differences a - b at one K (indexed by user), over the users both were scored on."""
    at = values[(values["K"] == k) & values["model"].isin([a, b])]
    wide = at.pivot_table(index="user", columns="model", values="value")
    if a not in wide or b not in wide:
        return pd.Series(dtype=np.float64)
    both = wide[[a, b]].dropna()
    return (both[a] - both[b]).astype(np.float64)


# --- routing and the heat map ----------------------------------------------------------------


def routing_html(info: dict) -> str:
    """A stack's learned routing as a small table: band, who answers, validation metric,
    runner-up; then the share of test requests that tripped the breaker at each K."""
    rows = ["<table class='routing'><tr><th>band (K)</th><th>users</th><th>answered by</th>"
            "<th>validation</th><th>runner-up</th></tr>"]
    for route in info.get("table", []):
        members = route.get("members", [])
        weights = route.get("weights", [])
        choice = members[0] if len(members) == 1 else "blend: " + ", ".join(
            f"{m} {w:.2f}" for m, w in zip(members, weights, strict=False))
        value = "" if route.get("metric") is None else f"{route['metric']:.4f}"
        runner = route.get("runner_up") or ""
        rows.append(f"<tr><td>{html.escape(str(route.get('band', '')))}</td><td>{route.get('users', '')}</td>"
                    f"<td class='m'>{html.escape(choice)}</td><td>{value}</td>"
                    f"<td class='m'>{html.escape(str(runner))}</td></tr>")
    rows.append("</table>")
    learned = info.get("learned") or {}
    if learned.get("kind"):
        rows.append(f"<p>Answered by the learned stacker <b>{html.escape(str(learned['kind']))}</b> over "
                    f"{html.escape(', '.join(learned.get('members', [])))}; the table above is its fallback "
                    "and explanation.</p>")
    trips = info.get("trip_share", {})
    if trips:
        rows.append("<p>Circuit breaker tripped on " + ", ".join(
            f"{share:.1%} of requests at K={k}" for k, share in trips.items()) + ".</p>")
    return "\n".join(rows)


def heat_colour(value: float, low: float, high: float, lower_better: bool) -> str:
    """A cell's background: stronger blue for better values within its column."""
    if not np.isfinite(value) or not high > low:
        return "transparent"
    share = (value - low) / (high - low)
    share = 1 - share if lower_better else share
    return f"rgba(33,102,172,{0.08 + 0.62 * share:.2f})"


def heat_table(table: pd.DataFrame, metric: str, cls: str = "heat") -> str:
    """Models by K of one metric, each column shaded from worst (white) to best (blue), the
    best in bold; the 95% interval on hover."""
    rows = table[table["metric"] == metric]
    if rows.empty:
        return ""
    wide = wide_headline(table, metric)
    lows = rows.pivot_table(index="model", columns="K", values="low", sort=False)
    highs = rows.pivot_table(index="model", columns="K", values="high", sort=False)
    lower = metric in LOWER_IS_BETTER
    out = [f"<table class='{cls}'><tr><th>{html.escape(metric)}</th>"
           + "".join(f"<th>K={k}</th>" for k in wide.columns) + "</tr>"]
    extremes = {k: (wide[k].min(), wide[k].max()) for k in wide.columns}
    best = {k: (wide[k].idxmin() if lower else wide[k].idxmax()) if wide[k].notna().any() else None
            for k in wide.columns}
    for model in wide.index:
        cells = []
        for k in wide.columns:
            v = wide.at[model, k]
            if not np.isfinite(v):
                cells.append("<td>n/a</td>")
                continue
            lo = lows.at[model, k] if model in lows.index else np.nan
            hi = highs.at[model, k] if model in highs.index else np.nan
            text = f"<b>{v:.3f}</b>" if best[k] == model else f"{v:.3f}"
            cells.append(f"<td style='background:{heat_colour(v, *extremes[k], lower)}' "
                         f"title='{v:.4f} [{lo:.4f}, {hi:.4f}]'>{text}</td>")
        cls_m = "m base" if model in BASELINES else "m"
        out.append(f"<tr><td class='{cls_m}'>{html.escape(model)}</td>{''.join(cells)}</tr>")
    out.append("</table>")
    return "\n".join(out)


CSS = """
.glance{margin-bottom:1.5em}
svg.curve{max-width:100%;height:auto;font:12px sans-serif}
svg .grid{stroke:#e5e5e5} svg .tick{fill:#555} svg .axis{fill:#333}
svg .line path{fill:none} svg .line circle{stroke:none}
svg .strong path{stroke:var(--c);stroke-width:2} svg .strong circle{fill:var(--c)}
svg .strong .band{fill:var(--c);opacity:.10;stroke:none}
svg .stack path{stroke-width:3.2}
svg .base path{stroke-dasharray:5 3}
svg .faint path{stroke:#c9c9c9;stroke-width:1} svg .faint circle{fill:#c9c9c9;r:1.5}
svg .faint .band{display:none}
svg .faint:hover path{stroke:var(--c);stroke-width:2.2} svg .faint:hover circle{fill:var(--c)}
svg .label{font-weight:600}
.legend{display:flex;flex-wrap:wrap;gap:2px 12px;font-size:12px;margin:4px 0 12px;max-width:820px}
.legend label{cursor:pointer;white-space:nowrap}
ul.verdicts{padding-left:1.2em} ul.verdicts li{margin:2px 0}
li.win::marker{content:"\\25B2  ";color:#1a7f37} li.loss::marker{content:"\\25BC  ";color:#b42318}
li.tie::marker{content:"\\25CF  ";color:#888}
table.heat td,table.routing td{font-size:12px;padding:2px 6px}
.glance-row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
@media print{.legend input{display:none}}
"""

SCRIPT = """
document.querySelectorAll('.legend input').forEach(function (box) {
  box.addEventListener('change', function () {
    var svg = document.getElementById(box.closest('.legend').dataset.for);
    svg.querySelectorAll('[data-model]').forEach(function (el) {
      if (el.dataset.model !== box.dataset.model) return;
      if (el.tagName !== 'g') return;
      el.classList.toggle('strong', box.checked);
      el.classList.toggle('faint', !box.checked);
    });
  });
});
window.addEventListener('beforeprint', function () {
  document.querySelectorAll('details').forEach(function (d) { d.open = true; });
});
"""


def glance_html(result: object, ident: str) -> str:
    """One result's glance: the curve, the verdicts, the routing, the heat map."""
    metric = headline(result)
    meta = result.meta  # type: ignore[attr-defined]
    stacks = list(meta.get("stacks", {}))
    parts = ["<section class='glance'>",
             f"<h3>Cold to warm: {html.escape(metric)} by K</h3>",
             curve_svg(result.table, metric, stacks, ident)]  # type: ignore[attr-defined]
    lines = verdicts(result, stacks[0] if stacks else None)
    if lines:
        who = (f"{html.escape(stacks[0])} against its best member (chosen after the fact on the test users)"
               if stacks else "the leader against the runner-up")
        parts.append(f"<h3>Verdict per K: {who}</h3><ul class='verdicts'>")
        parts += [f"<li class='{v.outcome}'>{html.escape(v.sentence())}</li>" for v in lines]
        parts.append("</ul>")
    parts.append("<div class='glance-row'>")
    for name in stacks[:1]:
        parts.append(f"<div><h3>{html.escape(name)}: routing learned on validation users</h3>"
                     f"{routing_html(meta['stacks'][name])}</div>")
    parts.append(f"<div><h3>Heat map: {html.escape(metric)}</h3>{heat_table(result.table, metric)}</div>")  # type: ignore[attr-defined]
    parts.append("</div></section>")
    return "\n".join(parts)
