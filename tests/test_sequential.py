"""SASRec and GRU4Rec: they learn an order, plug into the protocol, and score consistently."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import history
from thaw.data.schema import Dataset
from thaw.data.splits import make_split
from thaw.data.synthetic import make_step_walks
from thaw.errors import ThawError
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.models.base import Context
from thaw.registry import make_model, model_names, parse_param

SEQUENTIAL = ["sasrec", "gru4rec"]


def walking_dataset(n_users: int = 900, n_items: int = 60, seed: int = 0) -> Dataset:
    """Every user walks the catalogue i, i+1, i+2, ... from a random start: the next item is
    always last + 1 (mod n_items), which only an order-aware model can know."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        start = int(rng.integers(0, n_items))
        for t in range(int(rng.integers(8, 14))):
            rows.append((f"u{u}", f"i{(start + t) % n_items}", 4.0, 1_000 * u + t))
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "ts"])
    items = pd.DataFrame(index=[f"i{i}" for i in range(n_items)])
    return Dataset.from_frames("walk", frame, items=items)


@pytest.fixture(scope="module")
def walk_split():
    return make_split(walking_dataset(), "new-user", seed=0)


@pytest.fixture(scope="module")
def walk_result(walk_split):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateResultWarning)
        return evaluate(["pop", *SEQUENTIAL], walk_split, ks=(1, 3), progress=False, n_bootstrap=50)


@pytest.fixture(scope="module")
def fitted(walk_split):
    """Small fitted models (few epochs) for the consistency checks."""
    return {name: make_model(name, epochs=2).fit(walk_split.train) for name in SEQUENTIAL}


def test_registry_lists_the_sequential_models():
    assert {"sasrec", "gru4rec"} <= set(model_names())
    assert not make_model("sasrec").predicts_ratings


def test_sequential_models_plug_into_the_protocol(walk_result):
    table = walk_result.table
    assert set(table["model"]) == {"pop", *SEQUENTIAL}
    assert set(table["K"]) == {1, 3}
    # (A perfect score on the planted walk draws "suspiciously perfect" notes; those are fine.)
    assert not [w for w in walk_result.warnings if "NaN" in w or "the same" in w]
    assert set(walk_result.timings["model"]) == {"pop", *SEQUENTIAL}


@pytest.mark.parametrize("model", SEQUENTIAL)
def test_planted_transition_is_learned(walk_result, model):
    hit1 = walk_result.table.pivot_table(index="model", columns=["metric", "K"], values="value")["hit@1"]
    assert hit1.loc[model, 3] > 0.7
    assert hit1.loc[model, 3] > hit1.loc["pop", 3] + 0.5


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_score_many_equals_score(fitted, name):
    model = fitted[name]
    rng = np.random.default_rng(1)
    contexts = [Context(None, history(rng.choice(60, size=k, replace=False))) for k in (0, 1, 3, 7, 60)]
    items = [rng.choice(60, size=n, replace=False) for n in (5, 60, 1, 17, 30)]
    many = model.score_many(contexts, items)
    for ctx, cands, batch in zip(contexts, items, many, strict=True):
        assert np.array_equal(model.score(ctx, cands), batch)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_empty_history_scores_are_finite_and_deterministic(fitted, name):
    model = fitted[name]
    empty = Context(None)
    first = model.score(empty, np.arange(60))
    assert np.isfinite(first).all()
    assert np.array_equal(first, model.score(empty, np.arange(60)))
    assert len(np.unique(first)) > 1


def test_fitting_is_reproducible(walk_split):
    a = make_model("gru4rec", epochs=1).fit(walk_split.train)
    b = make_model("gru4rec", epochs=1).fit(walk_split.train)
    ctx = Context(None, history([3, 4, 5]))
    assert np.array_equal(a.score(ctx, np.arange(60)), b.score(ctx, np.arange(60)))


def test_items_unseen_in_training_rank_last():
    """Without features (the walk has none), or with ``item_features=False``, an item never
    seen in training scores -inf."""
    data = walking_dataset(n_users=40, n_items=30)
    inter = data.interactions
    train = data.with_interactions(inter.take(inter.item != 7))
    model = make_model("sasrec", epochs=1).fit(train)
    scores = model.score(Context(None, history([5, 6])), np.arange(30))
    assert scores[7] == -np.inf
    assert np.isfinite(np.delete(scores, 7)).all()
    featured = with_parity_genres(train)
    blind = make_model("sasrec", epochs=1, item_features=False).fit(featured)
    unseen = np.setdiff1d(np.arange(30), featured.interactions.item)
    assert len(unseen) == 1 and blind.score(Context(None, history([5, 6])), unseen)[0] == -np.inf


def with_parity_genres(data: Dataset) -> Dataset:
    """The walk with a genre per item: "even" or "odd" by the item's number."""
    raw = [int(name[1:]) for name in data.item_ids]
    items = pd.DataFrame({"genres": [("odd",) if i % 2 else ("even",) for i in raw]}, index=data.item_ids)
    frame = pd.DataFrame({"user": np.asarray(data.user_ids)[data.interactions.user],
                          "item": np.asarray(data.item_ids)[data.interactions.item],
                          "rating": data.interactions.rating, "ts": data.interactions.ts})
    return Dataset.from_frames("walk-genres", frame, items=items)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_unseen_item_gets_the_embedding_its_features_predict(name):
    data = with_parity_genres(walking_dataset(n_users=200, n_items=30))
    unseen = int(np.flatnonzero(data.item_ids == "i7")[0])
    train = data.with_interactions(data.interactions.take(data.interactions.item != unseen))
    model = make_model(name, epochs=5, dim=16).fit(train)
    scores = model.score(Context(None, history([5, 6])), np.arange(30))
    assert np.isfinite(scores).all()
    table = model.net.items.weight.detach().numpy()[1:31]
    odd = np.array([int(n[1:]) % 2 == 1 for n in data.item_ids])
    trained = np.arange(30) != unseen
    cosine = [float(table[unseen] @ v / np.linalg.norm(table[unseen]) / np.linalg.norm(v))
              for v in (table[odd & trained].mean(0), table[~odd & trained].mean(0))]
    assert cosine[0] > cosine[1]  # i7 is "odd": it lands among the odd items


@pytest.fixture(scope="module")
def stride_split():
    return make_split(make_step_walks(n_users=400, n_items=200), "new-user", seed=0)


SMALL = {"sasrec": {"dim": 32, "lr": 5e-3}, "gru4rec": {"dim": 32, "hidden": 64, "lr": 5e-3}}


def _hit1_at_3(model, split) -> float:
    result = evaluate({model.name: model.fit(split.train)}, split, ks=(3,), progress=False,
                      n_bootstrap=10, fit=False)
    return float(result.table.set_index("metric").loc["hit@1", "value"])


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_catalogue_cross_entropy_learns_planted_strides(stride_split, name):
    """Two strides over 200 items (make_step_walks): with K = 3 the stride and the last item
    fix the next one. Seen on seed 0, 20 epochs, dim 32 (gru4rec hidden 64), lr 5e-3: Hit@1
    0.89 (sasrec) and 0.86 (gru4rec) with the softmax over the catalogue."""
    model = make_model(name, loss="ce", epochs=20, **SMALL[name])
    assert _hit1_at_3(model, stride_split) >= 0.75


def test_cross_entropy_beats_one_sampled_negative_on_the_same_budget(stride_split):
    """Seen on seed 0: gru4rec Hit@1 0.86 with "ce" against 0.36 with "bce"."""
    ce = _hit1_at_3(make_model("gru4rec", loss="ce", epochs=20, **SMALL["gru4rec"]), stride_split)
    bce = _hit1_at_3(make_model("gru4rec", loss="bce", epochs=20, **SMALL["gru4rec"]), stride_split)
    assert ce >= bce + 0.3


def test_loss_is_a_command_line_parameter_and_checked():
    assert parse_param("sasrec", "loss", "bce") == "bce"
    assert parse_param("gru4rec", "hidden", "128") == 128
    assert make_model("gru4rec", loss="bce").loss == "bce"
    with pytest.raises(ThawError, match="loss must be one of ce, bce"):
        make_model("sasrec", loss="softmax")


def test_wider_gru_state_scores_consistently(walk_split):
    model = make_model("gru4rec", hidden=48, dim=16, epochs=1).fit(walk_split.train)
    contexts = [Context(None, history([1, 2, 3])), Context(None)]
    items = [np.arange(60), np.arange(10)]
    for ctx, cands, batch in zip(contexts, items, model.score_many(contexts, items), strict=True):
        assert np.array_equal(model.score(ctx, cands), batch)
        assert np.isfinite(batch).all()


# --- the options tried for issue 11: sampled softmax, side features, support adaptation -------

def test_sampled_softmax_learns_planted_strides(stride_split):
    """100 popularity-drawn negatives of 200 items, with the logQ correction, instead of the
    whole catalogue. Seen on seed 0 (settings as the "ce" test), sasrec Hit@1: 0.51 with 20
    negatives, 0.70 with 50, 0.76 with 100, against 0.89 with "ce" and 0.39 with "bce"."""
    model = make_model("sasrec", loss="sampled", n_negatives=100, epochs=20, **SMALL["sasrec"])
    assert _hit1_at_3(model, stride_split) >= 0.7


def test_sampled_softmax_masks_a_negative_that_is_the_target():
    from thaw.models.sequential import sampled_softmax

    table = torch.eye(3)
    states = torch.tensor([[5.0, 0.0, 0.0]])
    only_target = torch.log(torch.tensor([1.0, 1e-12, 1e-12]))  # every draw is class 0, the target
    loss = sampled_softmax(states, table, torch.arange(3), torch.tensor([0]), only_target, 8,
                           torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(0.0)
    uniform = torch.log(torch.full((3,), 1 / 3))
    loss = sampled_softmax(states, table, torch.arange(3), torch.tensor([1]), uniform, 4000,
                           torch.Generator().manual_seed(0))
    assert loss.item() > 4.0  # the true class scores 0 against draws of class 0 at 5


def test_side_features_score_new_items_and_survive_save_and_load(tmp_path):
    data = with_parity_genres(walking_dataset(n_users=200, n_items=30))
    unseen = int(np.flatnonzero(data.item_ids == "i7")[0])
    train = data.with_interactions(data.interactions.take(data.interactions.item != unseen))
    model = make_model("sasrec", epochs=3, dim=16, side_features=True).fit(train)
    ctx = Context(None, history([5, 6]))
    scores = model.score(ctx, np.arange(30))
    assert np.isfinite(scores).all()
    # The new item's representation is its features' projection alone (its id row is zero).
    table = model.net.table().detach().numpy()
    assert not model.net.items.weight[unseen + 1].any()
    assert np.allclose(table[unseen + 1], model.net.describe.weight.detach().numpy() @ model.item_side[unseen + 1])
    from thaw.persist import load, save

    save(model, tmp_path / "m")

    assert np.array_equal(load(tmp_path / "m").score(ctx, np.arange(30)), scores)


def test_support_adaptation_takes_gradient_steps_on_the_support(walk_split):
    base = make_model("sasrec", epochs=1, dim=16).fit(walk_split.train)
    states = np.random.default_rng(0).normal(size=(3, 16))
    targets = np.array([4, 5, 6]) + 1
    table = base.net.table().detach().double().numpy()
    adapted = make_model("sasrec", adapt_steps=1, adapt_lr=0.5)
    assert base.known.all()  # so a target item t is softmax class t - 1
    adapted.known = base.known
    offset = torch.zeros(16, dtype=torch.float64, requires_grad=True)
    known = torch.as_tensor(np.flatnonzero(base.known) + 1)
    logits = (torch.as_tensor(states) + offset) @ torch.as_tensor(table)[known].T
    nn_loss = torch.nn.functional.cross_entropy(logits, torch.as_tensor(targets - 1))  # known: every item
    nn_loss.backward()
    assert np.allclose(adapted._support_offset(states, targets, table), -0.5 * offset.grad.numpy())


def test_support_adaptation_moves_warm_scores_only(walk_split):
    plain = make_model("sasrec", epochs=1, dim=16).fit(walk_split.train)
    adapted = make_model("sasrec", epochs=1, dim=16, adapt_steps=3, adapt_lr=1.0).fit(walk_split.train)
    empty, warm = Context(None), Context(None, history([3, 4, 5]))
    assert np.array_equal(plain.score(empty, np.arange(60)), adapted.score(empty, np.arange(60)))
    assert not np.array_equal(plain.score(warm, np.arange(60)), adapted.score(warm, np.arange(60)))
    contexts, items = [warm, empty, Context(None, history([9]))], [np.arange(60), np.arange(9), np.arange(30)]
    for ctx, cands, batch in zip(contexts, items, adapted.score_many(contexts, items), strict=True):
        assert np.array_equal(adapted.score(ctx, cands), batch)


def test_a_seed_ensemble_averages_the_z_scores_of_copies_fitted_from_consecutive_seeds(walk_split):
    from thaw.models.base import normalise

    ensemble = make_model("gru4rec-x3", seed=5, seeds=2, epochs=1, dim=8).fit(walk_split.train)
    alone = [make_model("gru4rec", seed=s, epochs=1, dim=8).fit(walk_split.train) for s in (5, 6)]
    assert [c.seed for c in ensemble.copies] == [5, 6] and all(c.dim == 8 for c in ensemble.copies)
    user = list(walk_split.test)[0]
    ctx = Context(None, walk_split.test[user].take(slice(0, 3)))
    items = np.arange(walk_split.train.n_items)
    expected = (normalise(alone[0].score(ctx, items)) + normalise(alone[1].score(ctx, items))) / 2
    np.testing.assert_allclose(ensemble.score(ctx, items), expected, rtol=1e-12)
    assert not np.allclose(normalise(alone[0].score(ctx, items)), normalise(alone[1].score(ctx, items)))


def test_a_seed_ensemble_takes_its_models_parameters_and_refuses_others():
    assert parse_param("sasrec-x3", "n_blocks", "3") == 3 and parse_param("sasrec-x3", "seeds", "5") == 5
    with pytest.raises(ThawError, match="sasrec takes no parameter hidden"):
        make_model("sasrec-x3", hidden=8)
    with pytest.raises(ThawError, match="at least 1 seed"):
        make_model("gru4rec-x3", seeds=0)
