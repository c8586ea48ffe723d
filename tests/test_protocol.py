"""The protocol: held-out data never reaches fit, contexts hold exactly K, guards fire."""

import warnings

import numpy as np
import pandas as pd
import pytest

from thaw.data.splits import make_split
from thaw.errors import ThawError
from thaw.eval.episodes import episodes
from thaw.eval.headroom import format_headroom, format_persistence, format_pooled, headroom, persistence, pooled
from thaw.eval.protocol import DegenerateResultWarning, EvalResult, FewUsersWarning, SplitValidator, evaluate
from thaw.eval.statistics import clustered_p, compare, holm, paired_p, summarise
from thaw.models.base import Recommender
from thaw.registry import make_model


class Spy(Recommender):
    """Records everything it is shown; scores by a fixed per-item value."""

    predicts_ratings = True

    def __init__(self, name="spy", constant=False):
        self.name, self.constant = name, constant
        self.contexts, self.validated, self.phase = [], 0, "test"
        self.validation_contexts = []

    def fit(self, data, validate=None):
        self.fit_data = data
        self.value = np.random.default_rng(0).random(data.n_items)
        if validate is not None:
            self.phase = "validate"
            validate(self)
            self.phase = "test"
            self.validated += 1
        return self

    def score(self, ctx, items):
        (self.validation_contexts if self.phase == "validate" else self.contexts).append(ctx)
        return np.zeros(len(items)) if self.constant else self.value[items]

    def predict(self, ctx, items):
        return 1.0 + 4.0 * self.score(ctx, items)


def test_no_held_out_users_data_reaches_fit_and_contexts_hold_only_the_support(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    spy = Spy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateResultWarning)
        evaluate({"spy": spy}, split, ks=(1, 3), progress=False, n_bootstrap=50)
    fitted = spy.fit_data.interactions
    held = set(split.val) | set(split.test)
    assert not (set(fitted.user.tolist()) & held)
    # Test contexts come K by K in episode order; they hold the support and nothing more.
    expected = [e for k in (1, 3) for e in episodes(split, "test", k, "next-item", max_k=3)]
    assert expected and len(spy.contexts) == len(expected)
    for ctx, ep in zip(spy.contexts, expected, strict=True):
        k = len(ctx.history)
        assert k == ep.k and ctx.user is None
        assert np.array_equal(ctx.history.item, split.test[ep.user].item[:k])
        assert np.all(ctx.history.user == -1)  # the held-out user's id never travels
    # The validator only ever shows validation users.
    shown = [(len(c.history), tuple(c.history.item)) for c in spy.validation_contexts]
    val_eps = [e for k in (1, 3) for e in episodes(split, "val", k, "next-item", max_k=3)]
    assert spy.validated == 1 and shown
    assert shown == [(e.k, tuple(split.val[e.user].item[:e.k])) for e in val_eps]


def test_every_k_scores_the_same_users(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    users = [{e.user for e in episodes(split, "test", k, "next-item", max_k=10)} for k in (1, 3, 10)]
    assert users[0] == users[1] == users[2] and users[0]
    for e in episodes(split, "test", 3, "next-item", max_k=10):
        assert e.candidates[0] == split.test[e.user].item[3]
        assert np.array_equal(e.candidates[1:], split.negatives[e.user])


def test_constant_scorer_scores_worst_case_and_is_flagged(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    with pytest.warns(DegenerateResultWarning, match="scored every candidate the same"):
        result = evaluate({"flat": Spy("flat", constant=True)}, split, ks=(1,), progress=False,
                          n_bootstrap=50)
    values = result.table.set_index("metric")["value"]
    assert values["hit@10"] == 0.0 and values["auc"] == 0.0


def test_identical_models_and_perfect_metrics_are_flagged(synthetic):
    split = make_split(synthetic, "new-user", seed=0)

    class Oracle(Spy):
        def fit(self, data, validate=None):
            return self

        def score(self, ctx, items):
            s = np.zeros(len(items))
            s[0] = 1.0  # the protocol puts the target first: a leak this guard must catch
            return s

    with pytest.warns(DegenerateResultWarning) as record:
        evaluate({"a": Oracle("a"), "b": Oracle("b")}, split, ks=(1,), progress=False,
                 n_bootstrap=50)
    text = " ".join(str(r.message) for r in record)
    assert "1.0 for every user" in text and "identical numbers" in text


def test_results_table_is_tidy_with_intervals_and_comparisons(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    result = evaluate(["random", "pop", "content"], split, ks=(1, 3), progress=False,
                      n_bootstrap=200)
    table = result.table
    assert list(table.columns) == ["model", "K", "metric", "value", "low", "high", "users"]
    assert set(table["metric"]) == {"hit@1", "hit@10", "ndcg@10", "mrr", "auc"}
    assert (table["low"] <= table["value"] + 1e-12).all() and (table["value"] <= table["high"] + 1e-12).all()
    assert set(result.per_user["model"]) == {"random", "pop", "content"}
    comp = result.comparisons
    assert list(comp.columns) == ["K", "metric", "model_a", "model_b", "better", "test", "users",
                                  "diff", "p_value", "p_holm", "significant"]
    # Every pair of the three models, at each K and metric, over every test user.
    pairs = comp.groupby(["K", "metric"]).apply(
        lambda g: sorted(tuple(sorted(p)) for p in zip(g["model_a"], g["model_b"], strict=True)),
        include_groups=False)
    assert len(pairs) == 2 * 5
    assert all(p == [("content", "pop"), ("content", "random"), ("pop", "random")] for p in pairs)
    assert (comp["test"] == "wilcoxon").all() and (comp["users"] == result.meta["test_users"]).all()
    assert (comp["p_holm"] >= comp["p_value"]).all()
    assert (comp["significant"] == (comp["p_holm"] < 0.05)).all()


def _planted_per_user(n_users, models=("a", "b", "c")):
    """ndcg@10 at K = 1 where a > b > c for every user, each difference a different size."""
    rows = []
    for u in range(n_users):
        base = 0.5 + 0.01 * u
        values = {"a": base, "b": base - 0.01 * (u + 1), "c": base - 0.013 * (u + 1) - 0.005}
        rows += [(m, 1, u, "ndcg@10", values[m]) for m in models]
    return pd.DataFrame(rows, columns=["model", "K", "user", "metric", "value"])


def test_holm_correction_by_hand():
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; kept non-decreasing: 0.06 for the last.
    assert np.allclose(holm([0.04, 0.01, 0.03]), [0.06, 0.03, 0.06])
    assert np.allclose(holm([0.5, 0.9]), [1.0, 1.0])  # 2 x 0.5 capped at 1; 0.9 may not fall below
    assert np.allclose(holm([0.02]), [0.02])
    # Six users, a above b above c for each: every exact two-sided Wilcoxon p is 2 / 2^6, and
    # Holm over the three pairs of the family triples each (all tied at the smallest).
    comp = compare(_planted_per_user(6))
    assert len(comp) == 3
    assert np.allclose(comp["p_value"], 2 / 2 ** 6) and np.allclose(comp["p_holm"], 3 * 2 / 2 ** 6)
    assert not comp["significant"].any()  # raw p = 0.031, corrected 0.094
    first = comp.iloc[0]
    assert (first["model_a"], first["model_b"], first["better"]) == ("a", "b", "a")
    assert np.isclose(first["diff"], np.mean([0.01 * (u + 1) for u in range(6)]))
    # Two named pairs: a family of two, so the corrected p doubles.
    named = compare(_planted_per_user(6), pairs=[("c", "a"), ("b", "c")])
    assert [tuple(p) for p in named[["model_a", "model_b"]].to_numpy()] == [("c", "a"), ("b", "c")]
    assert list(named["better"]) == ["a", "b"] and (named["diff"].iloc[0] < 0)
    assert np.allclose(named["p_holm"], 2 * 2 / 2 ** 6)


def test_a_target_many_users_share_counts_once_in_the_clustered_test():
    rng = np.random.default_rng(0)
    # 60 users share one target and all lose by 0.5; 140 others, each with a target of their
    # own, are level on average. Over users the loss looks certain; over targets it is one
    # target of 141, absent from about a third of the resamples.
    diff = np.concatenate([np.full(60, -0.5), rng.normal(0, 0.3, 140)])
    targets = np.concatenate([np.zeros(60, dtype=int), np.arange(1, 141)])
    assert paired_p(diff) < 1e-4
    shared = clustered_p(diff, targets)
    assert shared > 0.05 and shared == clustered_p(diff, targets)  # seeded
    # Every user a target of their own: the clustered test sees what the users' test sees.
    distinct = np.arange(200)
    assert clustered_p(diff, distinct) < 1e-3
    assert clustered_p(rng.normal(0, 0.3, 200), distinct) > 0.05
    assert clustered_p(np.zeros(10), np.arange(10)) == 1.0
    # headroom's verdict follows the clustered test when it is given the targets
    per_user = pd.DataFrame([("stack", 0, u, "ndcg@10", 0.5 + d) for u, d in enumerate(diff)]
                            + [("member", 0, u, "ndcg@10", 0.5) for u in range(200)],
                            columns=["model", "K", "user", "metric", "value"])
    plain = headroom(per_user, "stack", ["member"], "ndcg@10")
    by_target = headroom(per_user, "stack", ["member"], "ndcg@10",
                         clusters={(0, u): int(t) for u, t in enumerate(targets)})
    assert plain["significantly_worse"].item() and not by_target["significantly_worse"].item()
    assert by_target["targets"].item() == 141 and "by target" in format_headroom(by_target)


def _two_members(value) -> pd.DataFrame:
    """A per_user frame of members a and b over 200 users at K = 0, 1, 3, 5, 10."""
    rows = [{"user": u, "K": k, "model": m, "metric": "ndcg@10", "value": value(u, k, m)}
            for u in range(200) for k in (0, 1, 3, 5, 10) for m in ("a", "b")]
    return pd.DataFrame(rows)


def test_a_preference_that_follows_the_user_is_found_on_their_other_targets_and_luck_is_not():
    # half the users always do better with a, half with b: their other K say which
    steady = _two_members(lambda u, k, m: 0.8 if (u % 2 == 0) == (m == "a") else 0.4)
    table = persistence(steady, ["a", "b"], "ndcg@10")
    assert np.allclose(table["captured"], 1.0) and np.allclose(table["persistent"], 0.8)
    # who wins is a coin flip per (user, K): the oracle still leads, the other K say nothing
    rng = np.random.default_rng(0)
    draws = {(u, k, m): rng.random() for u in range(200) for k in (0, 1, 3, 5, 10) for m in ("a", "b")}
    luck = persistence(_two_members(lambda u, k, m: draws[u, k, m]), ["a", "b"], "ndcg@10")
    assert (luck["oracle"] > luck["best"] + 0.1).all()
    assert abs(luck["captured"].mean()) < 0.2 and luck["users"].eq(200).all()
    assert "per-user" in format_persistence(luck)


def test_compare_writes_only_the_named_pairs(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    result = evaluate(["random", "pop", "content"], split, ks=(1, 3), progress=False,
                      n_bootstrap=20, pairs=[("pop", "content")])
    comp = result.comparisons
    assert set(zip(comp["model_a"], comp["model_b"], strict=True)) == {("pop", "content")}
    assert len(comp) == 2 * 5 and np.allclose(comp["p_holm"], comp["p_value"])  # a family of one
    with pytest.raises(ThawError, match="unicorn"):
        evaluate(["random", "pop"], split, ks=(1,), progress=False, pairs=[("pop", "unicorn")])


@pytest.mark.parametrize("n_users, starred", [(6, False), (7, True)])
def test_report_star_uses_the_holm_corrected_p(n_users, starred):
    from thaw.eval.report import _metric_table

    per_user = _planted_per_user(n_users)
    comp = compare(per_user)
    best = comp[comp["better"] == "a"]
    assert (best["p_value"] < 0.05).all()  # raw p: a leads both significantly at either size
    assert bool(best["significant"].all()) == starred  # Holm: 3 x 0.031 > 0.05 > 3 x 0.016
    result = EvalResult(summarise(per_user, n_bootstrap=20), per_user, comp,
                        pd.DataFrame(columns=["model", "fit_seconds", "score_seconds"]),
                        meta={"protocol": "next-item"})
    page = _metric_table(result, "ndcg@10")
    assert "<b>" in page and ("<sup>*</sup>" in page) == starred
    # Without the pair a-c compared, the lead over c is unproven: no mark.
    partial = EvalResult(result.table, per_user, compare(per_user, pairs=[("a", "b")]),
                         result.timings, meta={"protocol": "next-item"})
    assert "<sup>*</sup>" not in _metric_table(partial, "ndcg@10")


def test_rating_protocol_reports_errors_only_for_rating_models(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    result = evaluate(["pop", "bpr"], split, protocol="rating", ks=(1, 5), progress=False,
                      n_bootstrap=50)
    metrics = result.table.groupby("model")["metric"].apply(set)
    assert metrics["pop"] == {"mae", "rmse", "ndcg@3", "ndcg@10"}
    assert metrics["bpr"] == {"ndcg@3", "ndcg@10"}  # bpr ranks but does not predict ratings


def test_validator_scores_validation_users_only(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    validator = SplitValidator(split, "next-item", ks=(1, 3))
    assert validator.episodes and {e.user for e in validator.episodes} <= set(split.val)


def test_parallel_jobs_give_the_same_numbers_as_one(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    names = ["pop", "mf", "sasrec"]
    kwargs = {"sasrec": {"epochs": 1}}
    one = evaluate({n: make_model(n, **kwargs.get(n, {})) for n in names}, split, ks=(1, 3),
                   progress=False, n_bootstrap=20)
    two = evaluate({n: make_model(n, **kwargs.get(n, {})) for n in names}, split, ks=(1, 3),
                   progress=False, n_bootstrap=20, jobs=2)
    pd.testing.assert_frame_equal(one.per_user, two.per_user)
    pd.testing.assert_frame_equal(one.table, two.table)
    assert list(two.timings["model"]) == names


def test_rating_protocol_without_ratings_is_an_error(synthetic):
    from dataclasses import replace as with_

    inter = synthetic.interactions
    flat = synthetic.with_interactions(with_(inter, rating=np.ones(len(inter))))
    split = make_split(flat, "new-user", seed=0)
    with pytest.raises(ThawError, match="needs ratings, but every rating in the data is 1"):
        evaluate(["pop"], split, protocol="rating", ks=(1,), progress=False)


def test_too_few_or_no_test_users_at_the_largest_k(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    longest = max(len(s) for s in split.test.values())
    with pytest.raises(ThawError, match=f"none of the split's 24 test users has more than 500 .*most is {longest}"):
        evaluate(["pop"], split, ks=(1, 500), progress=False)
    with pytest.warns(FewUsersWarning, match="only 24 of the split's 24 test users"):
        result = evaluate(["pop"], split, ks=(1,), progress=False, n_bootstrap=10)
    assert any("only 24" in w for w in result.warnings)
    assert not [w for w in evaluate(["pop"], split, ks=(1,), progress=False, n_bootstrap=10,
                                    min_users=24).warnings if "only" in w]


def test_parallel_evaluation_stops_its_workers_when_it_fails(synthetic, monkeypatch):
    """A model that raises in a worker: the error reaches the caller and no worker is left."""
    import multiprocessing

    split = make_split(synthetic, "new-user", seed=0)
    with pytest.raises(ThawError, match=r"model 'bad' returned \d+ values for \d+ items"):
        evaluate({"pop": make_model("pop"), "bad": _Short()}, split, ks=(1,), progress=False,
                 jobs=2, n_bootstrap=10)
    assert not multiprocessing.active_children()


class _Short(Recommender):
    """Returns one score too few: an error raised inside the worker."""

    name = "bad"

    def fit(self, data, validate=None):
        return self

    def score(self, ctx, items):
        return np.zeros(len(items) - 1)


def test_next_item_on_an_item_split_records_each_test_episodes_target(synthetic):
    split = make_split(synthetic, "new-item", seed=0)
    result = evaluate(["pop"], split, ks=(0, 1), progress=False, n_bootstrap=20)
    expected = {(k, e.user): int(e.candidates[0])
                for k in (0, 1) for e in episodes(split, "test", k, "next-item", max_k=1)}
    recorded = {(k, u): i for k, u, i in result.targets[["K", "user", "item"]].itertuples(index=False)}
    assert recorded == expected and len(set(expected.values())) < len(expected)  # users share targets
    new_users = evaluate(["pop"], make_split(synthetic, "new-user", seed=0), ks=(0,), progress=False,
                         n_bootstrap=20)
    ratings = evaluate(["pop"], split, protocol="rating", ks=(0,), progress=False, n_bootstrap=20)
    assert new_users.targets.empty and ratings.targets.empty


def test_the_pooled_test_resamples_users_so_one_users_episodes_count_once():
    # a small lead that every user shows at every K: one test over all K sees it
    rng = np.random.default_rng(1)
    steady = _two_members(lambda u, k, m: 0.5 + (0.02 if m == "a" else 0.0) + rng.normal(0, 0.05))
    row = pooled(steady.replace({"model": {"a": "stack"}}), "stack", ["b"], "ndcg@10")
    assert row["best_member"] == "b" and row["episodes"] == 4 * 200 and row["users"] == 200
    assert row["p"] < 1e-3 and row["low"] > 0 and "over K >= 1" in format_pooled(row)
    # one user far ahead at every K, the rest level: four episodes, but one user's worth
    lucky = _two_members(lambda u, k, m: 1.0 if (u == 0 and m == "a") else 0.5)
    assert pooled(lucky.replace({"model": {"a": "stack"}}), "stack", ["b"], "ndcg@10")["p"] > 0.05
