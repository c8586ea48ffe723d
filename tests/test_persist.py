"""Every model saves to a folder (JSON + safetensors) and loads back scoring exactly the same,
with nothing ever unpickled."""

import json
import pickle
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file

import thaw
from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic
from thaw.errors import ThawError
from thaw.models.base import Context, Recommender
from thaw.models.baselines import Popularity
from thaw.registry import MODELS, make_model, model_names

FEATURE_NETS = ("melu", "maml", "fomaml", "hml", "hml-soft", "finetune", "widedeep", "deepfm")
METACSR = ("metacsr", "metacsr-nodiffusion", "metacsr-noseq", "metacsr-nometa")
TWO_TOWER = ("coldwarm", "coldwarm-nogate", "coldwarm-nodkd", "coldwarm-nobias", "coldwarm-coldonly",
             "dssm", "youtubednn", "fm")
SMALL = {"mf": {"iterations": 2, "dim": 4}, "bpr": {"epochs": 2, "dim": 8},
         "sasrec": {"epochs": 1, "dim": 8, "max_len": 8}, "gru4rec": {"epochs": 1, "dim": 8, "max_len": 8},
         "sasrec-x3": {"seeds": 2, "epochs": 1, "dim": 8, "max_len": 8},
         "gru4rec-x3": {"seeds": 2, "epochs": 1, "dim": 8, "max_len": 8},
         "metatl": {"epochs": 1, "dim": 8, "tasks_per_user": 2},
         "metatl-nomaml": {"epochs": 1, "dim": 8, "tasks_per_user": 2},
         **{n: {"epochs": 1, "dim": 4, "hidden": (8,)} for n in FEATURE_NETS},
         **{n: {"epochs": 1, "dim": 8, "max_len": 5} for n in METACSR},
         **{n: {"epochs": 1, "dim": 8, "hidden": 8} for n in TWO_TOWER}}
# Cross-domain models need two domains: tests/test_transfer.py saves and loads them.
TWO_DOMAINS = ("cmf", "emcdr", "ptupcdr")
CASES = ([(n, "rating") for n in model_names() if n not in ("stack", "stack-table") and n not in TWO_DOMAINS]
         + [("melu", "next-item"), ("hml", "next-item")])


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=50, n_items=30, seed=1), "new-user", seed=0)


def contexts(split):
    """Held-out users with K = 0, 1 and 5 support items, and one warm user by id."""
    out = [Context(None, split.test[u].take(slice(0, k)), split.train.profile(u))
           for u in list(split.test)[:2] for k in (0, 1, 5)]
    return out + [Context(int(split.train.interactions.user[0]))]


def fitted(name, task, split):
    model = make_model(name, **SMALL.get(name, {}))
    model.set_task(task)
    return model.fit(split.train)


@pytest.mark.parametrize("name,task", CASES)
def test_a_loaded_model_scores_like_the_saved_one(name, task, split, tmp_path):
    model = fitted(name, task, split)
    thaw.save(model, tmp_path / "model")
    loaded = thaw.load(tmp_path / "model")
    assert type(loaded) is type(model) and loaded.name == name
    items = np.arange(split.train.n_items)
    for ctx in contexts(split):
        np.testing.assert_array_equal(loaded.score(ctx, items), model.score(ctx, items))
        if model.predicts_ratings:
            np.testing.assert_array_equal(loaded.predict(ctx, items), model.predict(ctx, items))


def test_the_folder_holds_json_and_safetensors_and_loading_unpickles_nothing(split, tmp_path, monkeypatch):
    model = fitted("hml", "rating", split)
    thaw.save(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "tensors.safetensors"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["class"] == "hml" and meta["thaw_version"] == thaw.__version__
    tensors = load_file(str(tmp_path / "tensors.safetensors"))
    assert "net.out.bias" in tensors and "data.interactions.rating" in tensors

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    rng_state = torch.random.get_rng_state()
    loaded = thaw.load(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # loading draws from no one's stream
    # The training data a meta-learner rebuilds from comes back whole.
    a, b = model.data, loaded.data
    for col in ("user", "item", "rating", "ts"):
        np.testing.assert_array_equal(getattr(a.interactions, col), getattr(b.interactions, col))
        assert getattr(a.interactions, col).dtype == getattr(b.interactions, col).dtype
    np.testing.assert_array_equal(a.user_ids, b.user_ids)
    np.testing.assert_array_equal(a.item_ids, b.item_ids)
    pd.testing.assert_frame_equal(a.user_features, b.user_features)
    pd.testing.assert_frame_equal(a.item_features, b.item_features)
    assert (a.name, a.rating_scale, a.source) == (b.name, b.rating_scale, b.source)
    np.testing.assert_array_equal(loaded.cluster_sizes, model.cluster_sizes)
    assert loaded.history == model.history


def test_dict_keys_keep_their_types(split, tmp_path):
    model = fitted("segment-pop", "rating", split)
    thaw.save(model, tmp_path)
    loaded = thaw.load(tmp_path)
    assert list(loaded.segment_scores) == list(model.segment_scores)
    assert all(type(k) is tuple for k in loaded.segment_scores)


class Holder(Recommender):
    """A router-like model: fitted members in ``self.members`` plus every kind of data."""

    name = "test-holder"
    _transient = ("cache",)

    def __init__(self) -> None:
        self.members = {"pop": make_model("pop"), "mf": make_model("mf", iterations=1, dim=2)}

    def fit(self, data, validate=None) -> Self:
        for member in self.members.values():
            member.fit(data)
        self.data = data
        self.cache = object()
        self.values = {(1, "a"): np.float32(0.5), 2: [None, True, float("nan"), -np.inf],
                       "nested": {"t": torch.arange(3.0), "p": torch.nn.Parameter(torch.ones(2))}}
        self.text = np.array(["x", "yz"])
        self.matrix = sp.random(4, 5, density=0.5, format="csr", random_state=0)
        self.frame = pd.DataFrame({"a": [1, 2], "b": [("g",), ("h", "i")]}, index=["r", "s"])
        self.series = pd.Series([1.5, 2.5], name="s")
        self.folder = Path("some/where")
        return self

    def score(self, ctx, items):
        return sum(m.score(ctx, items) for m in self.members.values())


@pytest.fixture
def holder(monkeypatch):
    monkeypatch.setitem(MODELS, "test-holder", Holder)
    return Holder()


def test_nested_models_and_every_kind_of_data_round_trip(holder, split, tmp_path):
    holder.fit(split.train)
    thaw.save(holder, tmp_path)
    assert (tmp_path / "members" / "pop" / "model.json").is_file()
    assert (tmp_path / "members" / "mf" / "tensors.safetensors").is_file()
    loaded = thaw.load(tmp_path)
    assert loaded.cache is None and type(loaded.members["mf"]).__name__ == "MatrixFactorization"
    for ctx in contexts(split):
        np.testing.assert_array_equal(loaded.score(ctx, np.arange(30)), holder.score(ctx, np.arange(30)))
    v = loaded.values
    assert list(v) == [(1, "a"), 2, "nested"] and type(v[(1, "a")]) is np.float32
    assert v[2][:2] == [None, True] and np.isnan(v[2][2]) and v[2][3] == -np.inf
    assert torch.equal(v["nested"]["t"], torch.arange(3.0))
    assert isinstance(v["nested"]["p"], torch.nn.Parameter) and v["nested"]["p"].requires_grad
    np.testing.assert_array_equal(loaded.text, holder.text)
    assert loaded.text.dtype == holder.text.dtype
    assert type(loaded.matrix) is type(holder.matrix) and (loaded.matrix != holder.matrix).nnz == 0
    pd.testing.assert_frame_equal(loaded.frame, holder.frame)
    pd.testing.assert_series_equal(loaded.series, holder.series)
    assert loaded.folder == holder.folder


def test_an_attribute_that_is_not_data_fails_the_save_by_name(split, tmp_path):
    model = fitted("pop", "rating", split)
    model.scorer = lambda ctx: 0.0
    with pytest.raises(ThawError, match="attribute 'scorer' holds a function"):
        thaw.save(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    model = fitted("pop", "rating", split)
    model.modules = [torch.nn.Linear(2, 2)]
    with pytest.raises(ThawError, match="'modules.0' is a torch module inside a container"):
        thaw.save(model, tmp_path / "out")


def test_a_class_that_only_inherits_its_registry_name_is_refused_before_writing(tmp_path):
    class MyPop(Popularity):  # would load back as pop: save reads the class's own name
        pass

    with pytest.raises(ThawError, match="MyPop: its class sets no registry name of its own"):
        thaw.save(MyPop(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_class_whose_name_is_not_registered_to_it_is_refused_before_writing(tmp_path):
    class Mine(Popularity):  # its own name, but no line in the registry: it could not load
        name = "mine"

    class Impostor(Popularity):  # pop's name: it would load back as Popularity
        name = "pop"

    for model, why in ((Mine(), "in no registry line"), (Impostor(), "Popularity's")):
        with pytest.raises(ThawError, match=why):
            thaw.save(model, tmp_path / "out")
        assert not (tmp_path / "out").exists()


def test_unfitted_models_save_and_load(tmp_path):
    for name in ("melu", "hml", "sasrec", "metatl", "metacsr"):
        model = make_model(name, epochs=1)
        thaw.save(model, tmp_path / name)
        loaded = thaw.load(tmp_path / name)
        assert type(loaded) is type(model) and loaded.epochs == 1 and not hasattr(loaded, "net")


def test_load_errors_are_one_clear_line(split, tmp_path):
    with pytest.raises(ThawError, match="no such folder"):
        thaw.load(tmp_path / "missing")
    thaw.save(fitted("pop", "rating", split), tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    (tmp_path / "model.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ThawError, match="unknown format version 99"):
        thaw.load(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({**meta, "class": "nope"}))
    with pytest.raises(ThawError, match="unknown model 'nope'"):
        thaw.load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ThawError, match="not valid JSON"):
        thaw.load(tmp_path)
    (tmp_path / "tensors.safetensors").unlink()
    with pytest.raises(ThawError, match="tensors.safetensors is missing"):
        thaw.load(tmp_path)
