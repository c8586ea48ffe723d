"""The model registry and the abilities its classes declare, --param and --seed, the public API
without import cycles, and the pieces the torch models share (scoring path, negative samplers)."""

import ast
import json
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import thaw
from thaw.cli import _make_models, _parse_params
from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic
from thaw.errors import ThawError
from thaw.meta.melu import FeatureMetaLearner
from thaw.models.base import Context
from thaw.models.features_net import FeatureModel
from thaw.models.neural import chunked, exact_scores
from thaw.models.sampling import pair_keys, sample_unseen, sample_unseen_by
from thaw.models.widedeep import DeepFM, WideDeep
from thaw.registry import CROSS_DOMAIN, MODELS, make_model, model_names, parameters, parse_param
from thaw.stack import Stack

ROOT = pathlib.Path(__file__).resolve().parents[1]
NEEDS_TEXT = {"content-minilm"}  # made only with the text extra's packages


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=60, n_items=40, seed=4), "new-user", seed=0)


# --- the registry ----------------------------------------------------------------------------

def test_every_model_class_carries_its_own_name():
    assert model_names() == list(MODELS)
    for name, cls in MODELS.items():
        assert vars(cls)["name"] == name
        if name not in NEEDS_TEXT:
            model = make_model(name)
            assert type(model) is cls and model.name == name and "name" not in vars(model)


def test_unknown_models_and_parameters_name_the_choices():
    with pytest.raises(ThawError, match="unknown model 'nope'; known models: random, pop, segment-pop"):
        make_model("nope")
    with pytest.raises(ThawError, match="model 'sasrec' has no parameter 'epoch'; its parameters: .*epochs"):
        parse_param("sasrec", "epoch", "3")
    with pytest.raises(ThawError, match="unknown model 'sasrek'"):
        _parse_params(["sasrek.epochs=3"])


def test_thaw_models_imports_nothing_from_thaw_meta():
    for path in sorted((ROOT / "thaw" / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("thaw.meta"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("thaw.meta") for a in node.names), path
    modules = [f"thaw.models.{p.stem}" for p in (ROOT / "thaw" / "models").glob("*.py") if p.stem != "__init__"]
    done = python(f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
                  "print(sorted(m for m in sys.modules if m.startswith('thaw.meta')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_wide_and_deep_and_deepfm_are_plain_feature_models():
    for cls in (WideDeep, DeepFM):
        assert issubclass(cls, FeatureModel) and not issubclass(cls, FeatureMetaLearner)
        assert "inner_steps" not in parameters(cls.name)


@pytest.mark.parametrize("first", ["thaw", "thaw.registry", "thaw.stack.router", "thaw.persist",
                                   "thaw.meta.hml", "thaw.eval.protocol", "thaw.cli"])
def test_the_public_api_imports_in_any_order_without_cycles(first):
    done = python(f"import {first}\nimport thaw\n"
                  "from thaw import (Context, Interactions, Stack, evaluate, load, load_dataset, make_model,\n"
                  "                  make_split, model_names)\n"
                  "assert make_model('stack').name == 'stack' and 'stack' in model_names()\n"
                  "assert Stack is thaw.stack.Stack and load is thaw.persist.load and thaw.save is thaw.persist.save\n")
    assert done.returncode == 0, done.stderr


def test_import_thaw_alone_stays_light():
    done = python("import sys, thaw\nprint('torch' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert set(thaw.__all__) >= {"load_dataset", "make_split", "Context", "Interactions", "evaluate",
                                 "make_model", "model_names", "load", "Stack"}


# --- abilities -------------------------------------------------------------------------------

SHRUNK = {"epochs": 1, "iterations": 2, "dim": 8, "max_len": 5, "tasks_per_user": 2, "seeds": 2}


def tiny(name):
    """Model ``name`` made small enough to fit in a moment on the synthetic sets."""
    known = parameters(name)
    params = {k: v for k, v in SHRUNK.items() if k in known}
    hidden = known["hidden"].default if "hidden" in known else None
    if isinstance(hidden, (tuple, int)):
        params["hidden"] = (8,) if isinstance(hidden, tuple) else 8
    if name in ("stack", "stack-table"):
        params["members"] = ["pop", "content", tiny("mf")]
    return make_model(name, seed=0, **params)


def without(data, items):
    """``data`` with every training interaction of ``items`` gone, their features kept."""
    inter = data.interactions
    return data.with_interactions(inter.take(~np.isin(inter.item, items)))


@pytest.fixture(scope="module")
def nobody_rated():
    """(training data, contexts, new items) for one domain and for a cross-domain pair."""
    from thaw.transfer import cross_domain_split
    from thaw.transfer.synthetic import make_mapped_domains

    new = np.array([1, 2, 3, 5, 8])
    plain = without(make_synthetic(n_users=60, n_items=40, seed=4), new)
    users = plain.interactions.user
    plain_contexts = [Context(None, plain.interactions.take(users == 0).take(slice(0, k)), plain.profile(0))
                      for k in (0, 3)] + [Context(0)]
    pair = cross_domain_split(make_mapped_domains(n_users=200, n_source=40, n_target=30, per_user=(10, 8),
                                                  seed=0), 0.3, seed=0).train
    target_new = np.array([0, 1, 2])
    pair = without(pair, target_new)
    source = pair.source_domain.interactions
    pair_contexts = [Context(None), Context(None, pair.interactions.take(slice(0, 2)),
                                            source=source.take(source.user == source.user[0]))]
    return {name: (pair, pair_contexts, target_new) if name in CROSS_DOMAIN else (plain, plain_contexts, new)
            for name in model_names()}


@pytest.mark.parametrize("name", model_names())
def test_a_model_scores_an_item_nobody_rated_exactly_when_its_class_says_it_can(name, nobody_rated):
    data, contexts, new = nobody_rated[name]
    assert np.bincount(data.interactions.item, minlength=data.n_items)[new].sum() == 0
    model = tiny(name)
    model.set_task("rating")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data)
    outputs = [model.score(c, new) for c in contexts]
    if model.predicts_ratings:
        outputs += [model.predict(c, new) for c in contexts]
    assert all(np.isfinite(o).all() for o in outputs) == type(model).scores_new_items, outputs


def test_a_model_refuses_data_without_a_source_domain_exactly_when_its_class_needs_one():
    plain = make_synthetic(n_users=40, n_items=30, seed=5)
    for name, cls in MODELS.items():
        assert not cls.needs_source or name in CROSS_DOMAIN, name  # so "all" never holds one
    for name in CROSS_DOMAIN:
        model = tiny(name)
        if MODELS[name].needs_source:
            with pytest.raises(ThawError, match="cross-domain split"):
                model.fit(plain)
        else:
            model.fit(plain)


def test_only_models_that_score_new_items_are_chosen_for_the_main_jobs_new_item_runs():
    chosen = [n for n, cls in MODELS.items() if cls.main_job_item_cold]
    assert chosen and all(MODELS[n].scores_new_items for n in chosen)
    # A choice is not inherited: the ablations of a chosen model stay out.
    assert MODELS["coldwarm"].main_job_item_cold and not MODELS["coldwarm-nogate"].main_job_item_cold


# --- seeds -----------------------------------------------------------------------------------

def test_make_model_seeds_every_model_that_takes_a_seed():
    for name in MODELS:
        if name in NEEDS_TEXT:
            continue
        model = make_model(name, seed=7)
        assert getattr(model, "seed", 7) == 7, name
        assert ("seed" in parameters(name)) == hasattr(model, "seed"), name
    assert _make_models(["bpr"], 7, {"bpr": {"seed": 3}})["bpr"].seed == 3  # --param wins over --seed
    stack = Stack(members=["pop", "bpr", "melu"], seed=7)  # members made by name: seeded too
    assert [getattr(m, "seed", 7) for m in stack.members.values()] == [7] * 4


def test_the_command_line_seeds_every_model_and_stack_member_from_the_run_seed():
    models = _make_models(["random", "pop", "bpr", "melu", "sasrec", "stack"], 5, {"bpr": {"epochs": 3}})
    assert [getattr(m, "seed", 5) for m in models.values()] == [5] * 6
    assert models["bpr"].epochs == 3
    stack = models["stack"]
    assert "random" not in stack.members and stack.members["bpr"] is models["bpr"]
    assert all(getattr(m, "seed", 5) == 5 for m in stack.members.values())


@pytest.mark.parametrize("name, params", [("bpr", {"epochs": 2, "dim": 4}),
                                          ("melu", {"epochs": 1, "dim": 4, "hidden": (8,)})])
def test_two_seeds_give_different_scores_and_one_seed_the_same(split, name, params):
    ctxs = [Context(None, split.test[u].take(slice(0, 3)), split.train.profile(u)) for u in list(split.test)[:5]]
    items = [np.arange(split.train.n_items)] * len(ctxs)

    def scores(seed):
        model = _make_models([name], seed, {name: params})[name]
        model.set_task("next-item")
        return np.stack(model.fit(split.train).score_many(ctxs, items))

    first = scores(0)
    np.testing.assert_array_equal(first, scores(0))
    assert not np.array_equal(first, scores(1))


# --- --param ---------------------------------------------------------------------------------

def test_param_values_are_read_by_the_constructor_signature():
    assert parse_param("sasrec", "epochs", "25") == 25
    assert parse_param("sasrec", "lr", "3e-3") == 0.003
    assert parse_param("metatl", "maml", "false") is False
    assert parse_param("melu", "hidden", "32,32") == (32, 32)
    assert parse_param("mf", "grid", "(0.1, 0.3)") == (0.1, 0.3)
    assert parse_param("content", "cache_dir", "none") is None
    assert parse_param("stack", "time_budget", "0.5") == 0.5
    with pytest.raises(ThawError, match="sasrec.epochs: '2.5' is not an integer"):
        parse_param("sasrec", "epochs", "2.5")
    with pytest.raises(ThawError, match="metatl.maml: 'maybe' is not a bool"):
        parse_param("metatl", "maml", "maybe")
    with pytest.raises(ThawError, match="stack.bands: .* cannot be set from the command line"):
        parse_param("stack", "bands", "0,1")


def test_params_are_repeatable_or_comma_separated_and_tuples_keep_their_commas():
    params = _parse_params(["sasrec.epochs=25,melu.hidden=32,32,melu.lr=0.01", "bpr.dim=8"])
    assert params == {"sasrec": {"epochs": 25}, "melu": {"hidden": (32, 32), "lr": 0.01}, "bpr": {"dim": 8}}
    assert _parse_params(None) == {}
    with pytest.raises(ThawError, match="MODEL.NAME=VALUE"):
        _parse_params(["sasrec=3"])
    with pytest.raises(ThawError, match="cannot set the stack's members"):
        _parse_params(["stack.members=pop"])


def test_param_reaches_the_model_and_is_recorded_in_results_json(tmp_path):
    data = make_synthetic(n_users=60, n_items=30, seed=2)
    frame = data.interactions.to_frame()
    frame["user"], frame["item"] = data.user_ids[frame["user"]], data.item_ids[frame["item"]]
    csv = tmp_path / "ratings.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "thaw", "evaluate", "--dataset", str(csv), "--models", "pop,bpr",
            "--ks", "1", "--bootstrap", "10", "--no-progress", "--jobs", "1", "--out", str(out)]
    done = subprocess.run([*args, "--param", "bpr.epochs=1", "--param", "bpr.dim=4,bpr.fold_scales=1.0"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "results.json").read_text())["params"] == {
        "bpr": {"epochs": 1, "dim": 4, "fold_scales": [1.0]}}
    assert set(pd.read_csv(out / "results.csv")["model"]) == {"pop", "bpr"}
    done = subprocess.run([*args, "--param", "sasrec.epochs=1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--param names sasrec, not among the models run" in done.stderr
    done = subprocess.run([*args, "--param", "bpr.epochz=1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "model 'bpr' has no parameter 'epochz'; its parameters: dim" in done.stderr
    assert "Traceback" not in done.stderr


# --- the shared scoring path and samplers -----------------------------------------------------

def test_chunked_scoring_returns_every_output_in_its_place_whatever_the_order_and_chunk():
    contexts = [Context(None) for _ in range(7)]
    items = [np.arange(i + 1) for i in range(7)]
    seen = []

    def score_chunk(ctxs, its):
        seen.append(len(ctxs))
        return [np.full(len(i), float(len(i))) for i in its]

    out = chunked(score_chunk, contexts, items, size=3, order=[6, 0, 5, 1, 4, 2, 3])
    assert seen == [3, 3, 1]
    assert [o.tolist() for o in out] == [[float(i + 1)] * (i + 1) for i in range(7)]
    with pytest.raises(ValueError, match="differ in length"):
        chunked(score_chunk, contexts, items[:3])


def test_exact_scores_round_to_float32_and_rank_untrained_items_last():
    known = np.array([True, False, True])
    out = exact_scores(np.array([0.1, 5.0, 1 / 3]), np.array([0, 1, 2]), known)
    assert out.dtype == np.float64 and out[1] == -np.inf
    assert out[0] == np.float64(np.float32(0.1)) and out[2] == np.float64(np.float32(1 / 3))


def test_negative_samplers_draw_only_untouched_items():
    rng = np.random.default_rng(0)
    assert not np.isin(sample_unseen(10, np.array([1, 2, 3]), 50, rng), [1, 2, 3]).any()
    assert len(sample_unseen(3, np.array([0, 1, 2]), 5, rng)) == 0
    owners = np.array([0, 1, 2])
    keys = pair_keys(np.array([0, 0, 1, 2, 2]), np.array([1, 2, 0, 3, 4]), 6)
    pool = np.array([0, 1, 2, 3, 4])
    drawn = sample_unseen_by(owners, (3, 40, 2), keys, 6, rng, pool=pool)
    assert drawn.shape == (3, 40, 2) and np.isin(drawn, pool).all()
    touched = {0: {1, 2}, 1: {0}, 2: {3, 4}}
    for owner in owners:
        assert not set(drawn[owner].ravel().tolist()) & touched[owner]


def test_all_leaves_out_the_seed_ensembles_which_run_where_named():
    from thaw.cli import _model_list

    everything = _model_list("all")
    assert "sasrec" in everything and not {"sasrec-x3", "gru4rec-x3"} & set(everything)
    assert _model_list("sasrec-x3,gru4rec-x3") == ["sasrec-x3", "gru4rec-x3"]
