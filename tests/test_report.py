"""The report at a glance: the curve's strong and faint lines, the verdict per K, the routing,
the heat map, and the page's size, on a results table with planted differences."""

import re

import numpy as np
import pandas as pd
import pytest

from thaw.eval.glance import family_of, heat_table, highlight, verdicts
from thaw.eval.protocol import EvalResult
from thaw.eval.report import format_tables, write_results
from thaw.eval.statistics import compare, summarise

KS = (1, 3, 5, 10)
# Planted mean NDCG@10 per model and K: mf best at K=1, sasrec best from K=3, the stack above
# both from K=5 on and level with the best member at K=1.
PLANTED = {
    "random": [0.10, 0.10, 0.10, 0.10], "pop": [0.30, 0.30, 0.30, 0.30],
    "segment-pop": [0.31, 0.31, 0.31, 0.31], "content": [0.25, 0.28, 0.30, 0.33],
    "mf": [0.34, 0.35, 0.36, 0.37], "bpr": [0.20, 0.22, 0.24, 0.26],
    "sasrec": [0.28, 0.38, 0.40, 0.42], "gru4rec": [0.27, 0.30, 0.33, 0.36],
    "melu": [0.29, 0.31, 0.33, 0.35], "hml": [0.22, 0.24, 0.26, 0.28],
    "maml": [0.21, 0.23, 0.25, 0.27], "deepfm": [0.19, 0.21, 0.23, 0.25],
    "stack": [0.34, 0.39, 0.46, 0.50],
}
MEMBERS = ["pop", "segment-pop", "content", "mf", "sasrec"]


def planted_result(users: int = 60, seed: int = 0) -> EvalResult:
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 0.05, size=(len(KS), users))  # each user's difficulty, shared by models
    rows = []
    for model, means in PLANTED.items():
        for j, k in enumerate(KS):
            noise = rng.normal(0, 0.01, size=users)
            values = means[j] + shared[j] + noise
            rows += [(model, k, u, "ndcg@10", v) for u, v in enumerate(values)]
    per_user = pd.DataFrame(rows, columns=["model", "K", "user", "metric", "value"])
    routes = [{"band": "0", "users": 10, "members": ["pop"], "weights": [1.0], "metric": 0.3,
               "threshold": None, "runner_up": "segment-pop", "runner_up_metric": 0.29, "source": "validation"},
              {"band": "1-4", "users": 12, "members": ["mf", "sasrec"], "weights": [0.4, 0.6], "metric": 0.4,
               "threshold": 0.1, "runner_up": "mf", "runner_up_metric": 0.38, "source": "validation"},
              {"band": "5+", "users": 15, "members": ["sasrec"], "weights": [1.0], "metric": 0.45,
               "threshold": 0.1, "runner_up": "mf", "runner_up_metric": 0.4, "source": "validation"}]
    meta = {"protocol": "next-item", "split_kind": "new-user", "split": "planted", "test_users": users,
            "candidates": 100, "stacks": {"stack": {"members": MEMBERS, "table": routes, "learned": {},
                                                    "trip_share": {1: 0.05, 3: 0.0, 5: 0.0, 10: 0.0},
                                                    "explain": "(planted)"}}}
    return EvalResult(summarise(per_user, n_bootstrap=100), per_user, compare(per_user),
                      pd.DataFrame({"model": list(PLANTED), "fit_seconds": 1.0, "score_seconds": 0.5}),
                      meta=meta)


@pytest.fixture(scope="module")
def result():
    return planted_result()


def test_families_follow_the_registry_names():
    assert family_of("pop") == family_of("segment-pop") == "popularity"
    assert family_of("hml-soft") == family_of("metacsr-nometa") == "meta-learning"
    assert family_of("sasrec") == "sequential" and family_of("content-minilm") == "content"
    assert family_of("random") is None and family_of("stack") is None


def test_a_few_lines_are_strong_and_each_has_a_reason(result):
    chosen = highlight(result.table, "ndcg@10", ["stack"])
    # the stack; mf (best at K=1, best CF); sasrec (best from K=3, best sequential); segment-pop
    # (best popularity), melu (best meta-learning), content; random (baseline)
    assert set(chosen.strong) == {"stack", "mf", "sasrec", "segment-pop", "melu", "content", "random"}
    assert "best at K=1" in chosen.reasons["mf"] and "best CF" in chosen.reasons["mf"]
    assert "best at K=10" in chosen.reasons["sasrec"]
    assert chosen.colour["stack"] == "#000000"
    strong_colours = [chosen.colour[m] for m in chosen.strong if m not in ("stack", "random")]
    assert len(set(strong_colours)) == len(strong_colours)  # strong lines can be told apart


def test_the_verdicts_name_the_best_member_and_only_planted_leads_are_significant(result):
    lines = {v.k: v for v in verdicts(result, "stack")}
    assert sorted(lines) == list(KS)
    assert lines[1].second == "mf" and lines[10].second == "sasrec"
    assert not lines[1].significant and lines[1].outcome == "tie"  # planted level with mf
    assert lines[1].low < 0 < lines[1].high
    assert lines[10].significant and lines[10].outcome == "win"
    assert lines[10].diff == pytest.approx(0.08, abs=0.01) and lines[10].low > 0
    assert "not significant" in lines[1].sentence() and "K=10: stack" in lines[10].sentence()


def test_without_a_stack_the_leader_is_compared_with_the_runner_up(result):
    no_stack = EvalResult(result.table[result.table["model"] != "stack"],
                          result.per_user[result.per_user["model"] != "stack"],
                          compare(result.per_user[result.per_user["model"] != "stack"]),
                          result.timings, meta={"protocol": "next-item"})
    lines = {v.k: v for v in verdicts(no_stack)}
    assert (lines[1].first, lines[1].second) == ("mf", "segment-pop")
    assert (lines[10].first, lines[10].second) == ("sasrec", "mf") and lines[10].significant


def test_on_an_item_split_the_verdicts_resample_the_target_items_and_the_files_keep_them(result, tmp_path):
    from dataclasses import replace

    from thaw.eval.headroom import headroom, target_clusters

    users = result.per_user["user"].unique()
    # three targets shared by all the users at each K: the users' differences are not independent
    targets = pd.DataFrame([(k, u, 100 + u % 3) for k in KS for u in users], columns=["K", "user", "item"])
    items = replace(result, meta={**result.meta, "split_kind": "new-item"}, targets=targets,
                    user_ids=np.array([f"u{u}" for u in range(len(users))], dtype=object))
    by_targets = headroom(items.per_user, "stack", MEMBERS, "ndcg@10", clusters=target_clusters(targets))
    plain = {v.k: v for v in verdicts(result, "stack")}
    for v in verdicts(items, "stack"):
        assert v.test == "resampling target items" and "resampling target items" in v.sentence()
        assert v.p_holm == by_targets.set_index("K").at[v.k, "p_clustered_holm"]
        assert (v.low, v.high) != (plain[v.k].low, plain[v.k].high)
    assert all(v.test == "paired Wilcoxon" for v in plain.values())
    assert "by target" in format_tables(items) and "by target" not in format_tables(result)
    assert "over K >= 1 at once" in format_tables(result) and "over K >= 1" not in format_tables(items)
    written = pd.read_csv(write_results([items], tmp_path / "out", seed=0)["targets.csv"])
    assert len(written) == len(targets) and set(written["user"]) == {f"u{u}" for u in users}
    assert not (tmp_path / "plain" / "targets.csv").exists() and "targets.csv" not in write_results(
        [result], tmp_path / "plain", seed=0)


def test_the_heat_map_shades_better_cells_darker_and_bolds_the_best(result):
    page = heat_table(result.table, "ndcg@10")
    row = {m: re.findall(r"rgba\(33,102,172,([0-9.]+)\)", line)
           for line in page.splitlines() for m in [re.search(r"class='m[^']*'>([^<]+)<", line)] if m
           for m in [m.group(1)]}
    assert float(row["stack"][3]) > float(row["sasrec"][3]) > float(row["random"][3])
    top = result.table.query("model == 'stack' and K == 10")["value"].iloc[0]
    assert f"<b>{top:.3f}</b>" in page and page.count("<b>") == len(KS)


def test_the_report_opens_with_the_glance_and_keeps_every_table_below(result, tmp_path):
    files = write_results([result], tmp_path / "out", seed=0, command=["thaw", "evaluate"])
    page = files["report.html"].read_text()
    glance, _, rest = page.partition("<details>")
    assert "<svg id='curve0'" in glance and "Verdict per K" in glance and "routing learned" in glance
    assert glance.count("class='line strong") == 7 and glance.count("class='line faint") == 6
    assert re.search(r"<g class='line strong stack' data-model='stack'", glance)
    assert re.search(r"<li class='win'>K=10: stack", glance) and re.search(r"<li class='tie'>K=1: stack", glance)
    assert "blend: mf 0.40, sasrec 0.60" in glance and "5.0% of requests at K=1" in glance
    assert "hit@1" not in glance and "ndcg@10 (higher is better)" in rest  # full tables, collapsed
    assert "base64" not in page and "src='cold_to_warm.png'" in page
    assert "http://" not in page and "https://" not in page  # works offline
    assert len(page) < 80_000


def test_the_png_draws_few_strong_lines(result, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from thaw.eval import report

    drawn = []
    real = matplotlib.axes.Axes.plot

    def spy(ax, *args, **kwargs):
        drawn.append(kwargs.get("color"))
        return real(ax, *args, **kwargs)

    matplotlib.axes.Axes.plot = spy
    try:
        report.plot_cold_to_warm([result], tmp_path / "c.png")
    finally:
        matplotlib.axes.Axes.plot = real
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert drawn.count("#cccccc") == 6 and len(drawn) == len(PLANTED)  # one panel, 6 faint lines


def test_the_curve_keeps_the_strong_bands_inside_its_range_and_ticks_round():
    from thaw.eval.glance import _ticks, curve_svg

    assert [f"{t:.3g}" for t in _ticks(-0.02, 0.83)] == ["0", "0.2", "0.4", "0.6", "0.8"]
    table = planted_result(users=12).table
    table.loc[table["model"] == "sasrec", "high"] += 0.3  # a wide band on a strong line
    svg = curve_svg(table, "ndcg@10", ["stack"])
    top = table.loc[table["model"] == "sasrec", "high"].max()
    ticks = [float(t) for t in re.findall(r"text-anchor='end'>([-0-9.e]+)<", svg)]
    assert max(ticks) >= top - 0.1 and "clip-path" in svg


def test_the_headers_count_the_evaluated_users_once_and_say_why_not_all():
    result = planted_result()
    result.meta = {**result.meta, "split": "new-user split: 200 test users", "ks": list(KS)}
    text = format_tables(result).splitlines()[0]
    assert "200 test users; 60 of them evaluated (those with more than 10 interactions)" in text, text
    assert text.count("test users") == 1
