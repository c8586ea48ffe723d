"""Baselines: each does what it claims, and every one but random beats random."""

import numpy as np
import pandas as pd
import pytest

from conftest import history, tiny_dataset
from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic
from thaw.eval.protocol import evaluate
from thaw.models.base import Context
from thaw.models.baselines import fit_biases
from thaw.models.mf import explicit_fold_in, implicit_fold_in
from thaw.registry import make_model, model_names

BASELINES = ["random", "pop", "segment-pop", "bias", "content", "mf", "bpr"]


@pytest.fixture(scope="module")
def planted_results():
    data = make_synthetic(n_users=240, n_items=80, seed=3)
    split = make_split(data, "new-user", seed=0)
    out = {}
    for protocol in ("next-item", "rating"):
        result = evaluate(BASELINES, split, protocol=protocol, ks=(1, 3, 5, 10), progress=False,
                          n_bootstrap=100)
        out[protocol] = result.table.pivot_table(index="model", columns=["metric", "K"],
                                                 values="value")
    return out


def test_registry_names_every_baseline_and_rejects_unknown_names():
    assert set(BASELINES) <= set(model_names())
    with pytest.raises(Exception, match="unknown model 'nope'"):
        make_model("nope")


@pytest.mark.parametrize("model", BASELINES[1:])
def test_every_baseline_beats_random_at_ranking(planted_results, model):
    table = planted_results["next-item"]
    ours = table.loc[model, "ndcg@10"].mean()
    assert ours > table.loc["random", "ndcg@10"].mean() + 0.1


@pytest.mark.parametrize("model", ["pop", "segment-pop", "bias", "content", "mf"])
def test_every_rating_baseline_beats_random_at_mae(planted_results, model):
    table = planted_results["rating"]
    assert table.loc[model, "mae"].mean() < table.loc["random", "mae"].mean() - 0.3


@pytest.mark.parametrize("model", ["mf", "bpr", "content", "segment-pop"])
def test_personalised_baselines_beat_popularity_on_planted_clusters(planted_results, model):
    table = planted_results["next-item"]
    ks = [3, 5, 10]
    assert table.loc[model, "ndcg@10"][ks].mean() > table.loc["pop", "ndcg@10"][ks].mean()


def test_random_is_reproducible_per_context():
    model = make_model("random").fit(make_synthetic(n_users=10, n_items=10))
    ctx = Context(user=None, history=history([1, 2]))
    items = np.arange(10)
    assert np.array_equal(model.score(ctx, items), model.score(ctx, items))
    other = Context(user=None, history=history([3]))
    assert not np.array_equal(model.score(ctx, items), model.score(other, items))


def test_segment_pop_ranks_by_the_cold_users_segment():
    rows = []
    for u in range(10):  # women like item A, men like item B; B is more popular overall
        rows.append((f"f{u}", "A", 5.0, 1))
    for u in range(15):
        rows.append((f"m{u}", "B", 5.0, 1))
    users = pd.DataFrame({"gender": ["F"] * 10 + ["M"] * 15, "age": [30] * 25},
                         index=[f"f{u}" for u in range(10)] + [f"m{u}" for u in range(15)])
    data = tiny_dataset(rows, users)
    model = make_model("segment-pop", smoothing=1.0).fit(data)
    a, b = (int(np.flatnonzero(data.item_ids == x)[0]) for x in ("A", "B"))
    woman = model.score(Context(None, profile={"gender": "F", "age": 31}), np.array([a, b]))
    unknown = model.score(Context(None, profile={}), np.array([a, b]))
    assert woman[0] > woman[1]
    assert unknown[1] > unknown[0]  # falls back to global popularity


def test_content_scores_items_like_the_support_higher_and_handles_new_items():
    items = pd.DataFrame({"title": ["Space War", "Space War II", "Love Story", "Unrated Space War III"],
                          "year": [1977.0, 1980.0, 1970.0, 1983.0],
                          "genres": [("Sci-Fi",), ("Sci-Fi",), ("Romance",), ("Sci-Fi",)]},
                         index=["s1", "s2", "l", "new"])
    rows = [("u1", "s1", 5.0, 1), ("u1", "l", 1.0, 2), ("u2", "s2", 4.0, 1), ("u2", "l", 2.0, 3)]
    data = tiny_dataset(rows, items=items)
    model = make_model("content", popularity_weight=0.0).fit(data)  # similarity alone (see test_content)
    idx = {raw: i for i, raw in enumerate(data.item_ids)}
    ctx = Context(None, history=history([idx["s1"]], [5.0]))
    scores = model.score(ctx, np.array([idx["s2"], idx["l"], idx["new"]]))
    assert scores[0] > scores[1] and scores[2] > scores[1]  # the never-rated sequel ranks too
    pred = model.predict(ctx, np.array([idx["s2"], idx["l"]]))
    assert pred[0] > pred[1]


def test_implicit_fold_in_solves_the_weighted_normal_equations():
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(30, 4))
    items = np.array([2, 7, 7, 11])
    x = implicit_fold_in(factors, factors.T @ factors, items, alpha=5.0, reg=0.5)
    confidence = np.ones(30)
    np.add.at(confidence, items, 5.0)
    preference = np.zeros(30)
    preference[items] = 1.0
    gradient = factors.T @ (confidence * (factors @ x - preference * 1.0)) + 0.5 * x
    # duplicated items add confidence twice; the solve must agree with that reading
    assert np.allclose(gradient, 0.0, atol=1e-8)
    assert np.allclose(implicit_fold_in(factors, factors.T @ factors, np.array([], int), 5.0, 0.5), 0)


def test_explicit_fold_in_recovers_a_planted_user():
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(200, 5))
    true_x, true_bias = rng.normal(size=5), 0.7
    items = np.arange(200)
    residuals = factors @ true_x + true_bias
    x, bias = explicit_fold_in(factors, residuals, items, reg=1e-9)
    assert np.allclose(x, true_x, atol=1e-5) and bias == pytest.approx(true_bias, abs=1e-5)


def test_mf_serves_warm_users_from_their_trained_factors():
    data = make_synthetic(n_users=40, n_items=30, seed=1)
    model = make_model("mf", iterations=3).fit(data)
    ctx = Context(user=0)
    items = np.arange(30)
    assert np.allclose(model.score(ctx, items), model.item_factors @ model.user_factors[0])
    assert model.predict(ctx, items).shape == (30,)


def test_fold_prior_pulls_a_cold_user_toward_the_no_history_answer_and_fades_with_history():
    data = make_synthetic(n_users=60, n_items=40, seed=2)
    free = make_model("mf", iterations=3).fit(data)
    pulled = make_model("mf", iterations=3, fold_prior=30.0).fit(data)
    empty = Context(user=None)
    assert np.array_equal(free.score(empty, np.arange(40)), pulled.score(empty, np.arange(40)))
    gaps = {}
    for n in (1, 30):
        ctx = Context(user=None, history=history(np.arange(n), np.full(n, 5.0)))
        plain = implicit_fold_in(free.item_factors, free.gram, ctx.history.item, free.alpha, free.implicit_reg)
        assert np.allclose(free.user_vector(ctx.history, "next-item"), plain)
        pulled_vector = pulled.user_vector(ctx.history, "next-item")
        # The pull is the prior term of the fold-in's normal equations, toward the average user.
        assert np.allclose(pulled_vector, implicit_fold_in(free.item_factors, free.gram, ctx.history.item,
                                                           free.alpha, free.implicit_reg, free.mean_user, 30.0))
        gaps[n] = np.linalg.norm(pulled_vector - plain) / np.linalg.norm(plain)
        rating_gap = np.abs(pulled.predict(ctx, np.arange(40)) - free.predict(ctx, np.arange(40))).mean()
        ratings_k0 = np.abs(pulled.predict(ctx, np.arange(40)) - free.predict(empty, np.arange(40))).mean()
        assert ratings_k0 < np.abs(free.predict(ctx, np.arange(40)) - free.predict(empty, np.arange(40))).mean()
        assert rating_gap > 0
    assert gaps[30] < gaps[1]


def test_fold_prior_is_chosen_on_validation_users_from_its_grid():
    split = make_split(make_synthetic(n_users=240, n_items=80, seed=3), "new-user", seed=0)
    from thaw.eval.protocol import SplitValidator

    model = make_model("mf", iterations=3, grid=(0.1,), fold_priors=(0.0, 10.0, 1e6))
    model.set_task("next-item")
    validate = SplitValidator(split, "next-item", (1, 3))
    model.fit(split.train, validate)
    assert model.fold_prior in (0.0, 10.0, 1e6)
    chosen = validate(model)
    for weight in (0.0, 10.0, 1e6):
        model.fold_prior = weight
        assert validate(model) <= chosen
    assert make_model("mf", iterations=3).fit(split.train).fold_prior == 0.0  # no validator: as given


def test_batched_als_steps_match_the_per_user_fold_in():
    """Training solves all users at once; serving folds one in: the two must agree."""
    import scipy.sparse as sp

    from thaw.models.mf import _explicit_half_step, _implicit_half_step

    rng = np.random.default_rng(2)
    factors = rng.normal(size=(25, 4))
    users = rng.integers(0, 6, 60)
    items = rng.integers(0, 25, 60)
    ratings = rng.normal(size=60)
    binary = sp.csr_matrix((np.ones(60), (users, items)), shape=(6, 25))
    binary.sum_duplicates()
    binary.data[:] = 1.0
    batched = _implicit_half_step(binary, factors, alpha=4.0, reg=0.3)
    x_all, b_all = _explicit_half_step(users, items, ratings, 6, factors, reg=0.2)
    for u in range(6):
        touched = np.unique(items[users == u])
        expected = implicit_fold_in(factors, factors.T @ factors, touched, 4.0, 0.3)
        assert np.allclose(batched[u], expected)
        x, b = explicit_fold_in(factors, ratings[users == u], items[users == u], reg=0.2)
        assert np.allclose(x_all[u], x) and np.isclose(b_all[u], b)


def test_bias_als_matches_a_hand_computation():
    """u0 rates i0 5 and i1 3, u1 rates i0 4; mu = 4, both regularisers 1, one ALS sweep:
    b_i0 = (1 + 0) / (1 + 2) = 1/3, b_i1 = -1 / (1 + 1) = -1/2, then
    b_u0 = ((5 - 4 - 1/3) + (3 - 4 + 1/2)) / (1 + 2) = 1/18, b_u1 = (0 - 1/3) / (1 + 1) = -1/6."""
    users, items, ratings = np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([5.0, 3.0, 4.0])
    mu, b_u, b_i = fit_biases(users, items, ratings, 2, 2, reg_user=1.0, reg_item=1.0, iterations=1)
    assert mu == 4.0
    assert np.allclose(b_i, [1 / 3, -1 / 2]) and np.allclose(b_u, [1 / 18, -1 / 6])


def test_bias_als_converges_to_the_joint_ridge_solution():
    """Alternating exact half steps reach the minimiser of the joint regularised problem,
    solved here in one go from its normal equations."""
    rng = np.random.default_rng(4)
    users, items = rng.integers(0, 7, 80), rng.integers(0, 9, 80)
    ratings = rng.integers(1, 6, 80).astype(np.float64)
    mu, b_u, b_i = fit_biases(users, items, ratings, 7, 9, reg_user=2.0, reg_item=5.0, iterations=500)
    design = np.zeros((80, 16))
    design[np.arange(80), users] = 1.0
    design[np.arange(80), 7 + items] = 1.0
    penalty = np.diag([2.0] * 7 + [5.0] * 9)
    joint = np.linalg.solve(design.T @ design + penalty, design.T @ (ratings - ratings.mean()))
    assert np.allclose(np.concatenate([b_u, b_i]), joint, atol=1e-8)


def test_bias_folds_a_cold_users_bias_in_from_the_support_and_k0_is_mu_plus_item_bias():
    data = tiny_dataset([("a", "x", 5, 1), ("a", "y", 3, 2), ("b", "x", 4, 3), ("b", "z", 2, 4),
                         ("c", "y", 4, 5), ("c", "z", 1, 6)])
    model = make_model("bias", reg_user=2.0, reg_item=3.0, grid=()).fit(data)
    items = np.arange(data.n_items)
    mu, b_i = model.global_mean, model.item_bias
    assert np.isclose(mu, 19 / 6)
    cold = Context(user=None)
    assert np.allclose(model.predict(cold, items), mu + b_i)
    assert np.allclose(model.score(cold, items), mu + b_i)
    support = Context(user=None, history=history([0, 2], [5.0, 4.0]))
    b_u = ((5.0 - mu - b_i[0]) + (4.0 - mu - b_i[2])) / (2.0 + 2)
    assert np.allclose(model.predict(support, items), mu + b_i + b_u)
    assert np.allclose(model.score(support, items), mu + b_i)  # the user's bias shifts every item alike
    warm = Context(user=0)
    assert np.allclose(model.predict(warm, items), mu + b_i + model.user_bias[0])


def test_bias_takes_its_regularisers_from_the_validator():
    data = make_synthetic(n_users=40, n_items=30, seed=1)
    seen = []

    def validate(model):
        seen.append((model.reg_user, model.reg_item))
        return -abs(model.reg_user - 3.0) - abs(model.reg_item - 10.0)

    model = make_model("bias", grid=(1.0, 3.0, 10.0)).fit(data, validate=validate)
    assert len(seen) == 9 and (model.reg_user, model.reg_item) == (3.0, 10.0)
