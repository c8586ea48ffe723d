"""The protocol: held-out data never reaches fit, contexts hold exactly K, guards fire."""

import warnings

import numpy as np
import pandas as pd
import pytest

from thaw.data.splits import make_split
from thaw.eval.protocol import (DegenerateResultWarning, SplitValidator, episodes, evaluate)
from thaw.models.base import Recommender, make_model


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
    scored_test = [c for c in spy.contexts if c.history.user.size and int(c.history.user[0]) in split.test]
    assert scored_test
    for ctx in scored_test:
        user = int(ctx.history.user[0])
        k = len(ctx.history)
        assert k in (1, 3) and ctx.user is None
        assert np.array_equal(ctx.history.item, split.test[user].item[:k])
    # The validator only ever shows validation users.
    assert all(int(c.history.user[0]) in split.test for c in spy.contexts)
    val_users = {int(c.history.user[0]) for c in spy.validation_contexts}
    assert spy.validated == 1 and val_users and val_users <= set(split.val)


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
    assert set(comp.columns) >= {"K", "metric", "best", "other", "p_value", "significant"}


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
