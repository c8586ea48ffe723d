"""The stack's band table (``stacker="table"``, the stack-table model): routing by support size,
learned blends, the circuit breaker, reuse of fits. The learned stacker: test_learned_stack.py."""

import time

import numpy as np
import pytest

from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic
from thaw.eval.episodes import episodes, score_episodes
from thaw.eval.protocol import SplitValidator, evaluate
from thaw.models.base import Context, Recommender, top_n
from thaw.registry import make_model
from thaw.stack import Stack
from thaw.stack.router import band_of, simplex

KS = (0, 1, 2, 3, 4, 5, 7, 10)


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=300, n_items=80, seed=3), "new-user", seed=0)


@pytest.fixture(scope="module")
def segment_pop(split):
    return make_model("segment-pop").fit(split.train)


class KnowsTheTarget(Recommender):
    """Test double: under next-item the target is candidate 0, so this member can be made
    perfect (target first) or hopeless (target last) depending on the support size."""

    def __init__(self, good, seed=0):
        self.good, self.seed = good, seed

    def fit(self, data, validate=None):
        return self

    def score(self, ctx, items):
        noise = np.random.default_rng([self.seed, len(items), len(ctx.history)]).random(len(items))
        target = np.arange(len(items)) == 0
        return noise + np.where(target, 2.0 if self.good(len(ctx.history)) else -2.0, 0.0)


def fit_stack(split, members, protocol="next-item", **kwargs):
    stack = Stack(members=members, fitted=True, validation_ks=KS, time_budget=None,
                  **{"stacker": "table", **kwargs})
    stack.set_task(protocol)
    return stack.fit(split.train, validate=SplitValidator(split, protocol))


def test_routing_sends_few_and_many_interactions_to_the_member_best_at_each(split, segment_pop):
    early = KnowsTheTarget(lambda k: k <= 3)
    late = KnowsTheTarget(lambda k: k >= 4, seed=1)
    stack = fit_stack(split, {"early": early, "late": late, "segment-pop": segment_pop})
    table = stack.tables["next-item"]
    chosen = {route["band"]: route["members"] for route in table if route["source"] == "validation"}
    assert chosen["0"] == chosen["1"] == chosen["2-3"] == ["early"]
    assert chosen["4-5"] == chosen["6-10"] == ["late"]
    for k in (0, 1, 3, 5, 10):
        rows, _ = score_episodes(stack, episodes(split, "test", k, "next-item", max_k=10), "next-item")
        assert np.mean([r["hit@1"] for r in rows]) == 1.0


class PlantedRatings(Recommender):
    """Test double for the rating protocol: true ratings plus a planted error ``scale * e``,
    so 0.3 * (truth + e) + 0.7 * (truth - 3/7 e) is exact and nothing else is."""

    predicts_ratings = True

    def __init__(self, truth, scale):
        self.truth, self.scale = truth, scale

    def fit(self, data, validate=None):
        return self

    def predict(self, ctx, items):
        error = np.random.default_rng(len(items)).normal(0, 1, len(items))
        return self.truth[tuple(items)] + self.scale * error

    score = predict


def test_blend_weights_recover_a_planted_mix(split, segment_pop):
    truth = {tuple(e.candidates): e.truth for part in ("val", "test") for k in range(0, 11)
             for e in episodes(split, part, k, "rating", max_k=k)}
    a, b = PlantedRatings(truth, 1.0), PlantedRatings(truth, -3 / 7)
    stack = fit_stack(split, {"a": a, "b": b, "segment-pop": segment_pop}, protocol="rating")
    for route in stack.tables["rating"]:
        if route["source"] == "validation":
            weights = dict(zip(route["members"], route["weights"], strict=True))
            assert weights == pytest.approx({"a": 0.3, "b": 0.7})
    eps = episodes(split, "test", 3, "rating", max_k=10)
    rows, _ = score_episodes(stack, eps, "rating")
    assert np.mean([r["mae"] for r in rows]) < 1e-9


class Broken(Recommender):
    def __init__(self, how):
        self.how = how

    def fit(self, data, validate=None):
        return self

    def score(self, ctx, items):
        if self.how == "raise":
            raise RuntimeError("member down")
        if self.how == "sleep":
            time.sleep(0.5)
        return np.full(len(items), np.nan) if self.how == "nan" else np.arange(len(items), dtype=float)


@pytest.mark.parametrize("how", ["raise", "nan", "sleep"])
def test_breaker_trips_on_a_broken_member_and_still_answers_n_items(split, segment_pop, how):
    stack = Stack(members={"broken": Broken("ok"), "segment-pop": segment_pop}, fitted=True, stacker="table",
                  validation_ks=(0, 1), min_users=1, time_budget=0.1)
    stack.fit(split.train, validate=SplitValidator(split, "next-item"))
    stack.tables["next-item"] = [dict(r, members=["broken"], weights=[1.0], threshold=None)
                                 for r in stack.tables["next-item"]]
    stack.members["broken"] = Broken(how)
    ctx = Context(user=None, history=split.test[next(iter(split.test))].take(slice(0, 2)),
                  profile={"gender": "F", "age": 30})
    items = np.arange(split.train.n_items)
    expected = segment_pop.score(ctx, items)
    start = time.perf_counter()
    assert np.array_equal(stack.score(ctx, items), (expected - expected.mean()) / expected.std())
    assert stack.last_trips == [True]
    if how == "sleep":
        assert time.perf_counter() - start < 0.45
    chosen, _ = top_n(stack, ctx, items, 10)
    assert len(chosen) == 10 and not set(chosen) & set(ctx.history.item)
    assert stack.score_many([ctx, ctx], [items, items])[0].shape == items.shape
    # The batch path (offline evaluation) has no time budget: a slow member is only slow.
    assert stack.last_trips == [how != "sleep"] * 2


class Unsure(KnowsTheTarget):
    """Hopeless and says so (low confidence) at one support item, perfect elsewhere."""

    def __init__(self):
        super().__init__(lambda k: k != 1)

    def confidence(self, ctx, scores):
        return 0.0 if len(ctx.history) == 1 else 1.0


def test_breaker_trips_on_low_confidence_calibrated_on_validation(split, segment_pop):
    stack = fit_stack(split, {"unsure": Unsure(), "segment-pop": segment_pop},
                      bands=((0, 1), (2, 3), (4, None)))
    first = stack.tables["next-item"][0]
    assert first["members"] == ["unsure"] and 0.0 < first["threshold"] <= 1.0
    assert stack.tables["next-item"][1]["threshold"] is None
    one = episodes(split, "test", 1, "next-item", max_k=10)
    score_episodes(stack, one, "next-item")
    assert all(stack.last_trips)
    zero = episodes(split, "test", 0, "next-item", max_k=10)
    rows, _ = score_episodes(stack, zero, "next-item")
    assert not any(stack.last_trips) and np.mean([r["hit@1"] for r in rows]) == 1.0


def test_stack_learned_from_an_evaluations_fits_scores_like_a_fitted_stack(split):
    names = ["pop", "segment-pop", "content", "mf"]
    # The learned stacker (its out-of-fold fits included) and the table alike.
    models = {n: make_model(n) for n in names} | {"stack": Stack(members=names, validation_ks=KS, folds=2)}
    result = evaluate(models, split, protocol="next-item", ks=(0, 3), progress=False, n_bootstrap=10)
    offline = result.per_user[result.per_user.model == "stack"].set_index(["K", "user", "metric"])
    live = Stack(members=names, validation_ks=KS, time_budget=None, folds=2)
    live.set_task("next-item")
    live.fit(split.train, validate=SplitValidator(split, "next-item", (0, 3)))
    for k in (0, 3):
        eps = episodes(split, "test", k, "next-item", max_k=3)
        rows, _ = score_episodes(live, eps, "next-item")
        for ep, row in zip(eps, rows, strict=True):
            assert row["ndcg@10"] == offline.loc[(k, ep.user, "ndcg@10"), "value"]
    assert live.tables["next-item"] == result.meta["stacks"]["stack"]["table"]
    assert "routing learned on validation users" not in live.explain()
    assert "band" in live.explain() and "segment-pop" in live.explain()


def test_k0_episodes_carry_no_interaction_of_the_user(split):
    for ep in episodes(split, "test", 0, "next-item", max_k=10):
        assert len(ep.context.history) == 0 and ep.context.user is None
        assert ep.context.profile
        assert ep.candidates[0] == split.test[ep.user].item[0]
    for ep in episodes(split, "test", 0, "rating", max_k=10):
        assert len(ep.context.history) == 0
        assert np.array_equal(ep.candidates, split.test[ep.user].item)


def test_bands_and_blend_grid():
    bands = ((0, 0), (1, 1), (2, 3), (4, None))
    assert [band_of(n, bands) for n in (0, 1, 2, 3, 4, 99)] == [0, 1, 2, 2, 3, 3]
    grid = simplex(3, 0.1)
    assert np.allclose(grid.sum(axis=1), 1) and (grid > 0).all() and len(grid) == 36
    with pytest.raises(Exception, match="no band"):
        band_of(0, ((1, None),))


def test_minus_infinity_ranks_last_without_tripping_the_breaker():
    from thaw.stack.router import _checked, normalise

    scores = np.array([3.0, -np.inf, 1.0, 2.0])
    z = normalise(scores)
    assert np.isfinite(z).all() and np.argmin(z) == 1 and np.argsort(-z).tolist() == [0, 3, 2, 1]
    assert _checked(scores, np.arange(4), "next-item") is not None
    assert _checked(scores, np.arange(4), "rating") is None
    assert _checked(np.array([1.0, np.nan, 0, 0]), np.arange(4), "next-item") is None
    assert _checked(np.array([1.0, np.inf, 0, 0]), np.arange(4), "next-item") is None
