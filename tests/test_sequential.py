"""SASRec and GRU4Rec: they learn an order, plug into the protocol, and score consistently."""

import warnings

import numpy as np
import pandas as pd
import pytest

from conftest import history
from thaw.data.schema import Dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.models.base import Context
from thaw.registry import make_model, model_names

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
    data = walking_dataset(n_users=40, n_items=30)
    inter = data.interactions
    train = data.with_interactions(inter.take(inter.item != 7))
    model = make_model("sasrec", epochs=1).fit(train)
    scores = model.score(Context(None, history([5, 6])), np.arange(30))
    assert scores[7] == -np.inf
    assert np.isfinite(np.delete(scores, 7)).all()
