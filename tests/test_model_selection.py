"""Model selection: a validator with nothing to validate on is no validator (full training,
default hyperparameters, one loud warning); NaN from one that has users is an error."""

import warnings

import numpy as np
import pytest
import torch

from thaw.data.splits import make_split
from thaw.errors import ThawError
from thaw.eval.protocol import SplitValidator, evaluate
from thaw.models.base import EarlyStopping, ModelSelectionSkipped, Recommender, train_epochs
from thaw.registry import make_model


class _Named(Recommender):
    name = "named"


def _no_validation_split(data):
    return make_split(data, "new-user", test_frac=0.2, val_frac=0.0, seed=0)


def _skipped(record):
    return [w for w in record if issubclass(w.category, ModelSelectionSkipped)]


def test_split_validator_without_users_is_empty_and_says_why(synthetic):
    none = SplitValidator(_no_validation_split(synthetic), "next-item")
    assert none.empty and "no validation users" in none.reason
    short = SplitValidator(make_split(synthetic, "new-user", seed=0), "next-item", ks=(0, 100))
    assert short.empty and "more than 100 interactions" in short.reason
    full = SplitValidator(make_split(synthetic, "new-user", seed=0), "next-item")
    assert not full.empty and full.reason is None


def test_empty_validator_trains_every_epoch_and_warns_once(synthetic):
    validator = SplitValidator(_no_validation_split(synthetic), "next-item")
    net = torch.nn.Linear(1, 1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(2):
            history = train_epochs(_Named(), validator, epochs=6, patience=1,
                                   train_epoch=lambda: 0.0, net=net)
            assert len(history) == 6 and all("validation" not in r for r in history)
    (warning,) = _skipped(record)
    assert "model selection skipped" in str(warning.message)
    assert "no validation users" in str(warning.message)


def test_nan_from_a_validator_with_users_is_an_error():
    values = iter([0.5, float("nan")])
    with pytest.raises(ThawError, match="NaN at epoch 2"):
        train_epochs(_Named(), lambda model: next(values), epochs=5, patience=3,
                     train_epoch=lambda: 0.0, net=torch.nn.Linear(1, 1))
    with pytest.raises(ThawError, match="NaN"):
        EarlyStopping(2).update(float("nan"), lambda: None)


def test_mf_and_bpr_keep_their_defaults_without_validation_users(synthetic):
    split = _no_validation_split(synthetic)
    validator = SplitValidator(split, "next-item")
    items = np.arange(synthetic.n_items)
    with pytest.warns(ModelSelectionSkipped):
        mf = make_model("mf", iterations=2, dim=4).fit(split.train, validate=validator)
    # NaN used to pick the grid's first value (0.03); the default is kept instead.
    assert mf.reg == 0.1
    plain = make_model("mf", iterations=2, dim=4).fit(split.train)
    assert np.array_equal(mf.item_factors, plain.item_factors)

    validator = SplitValidator(split, "next-item")
    with pytest.warns(ModelSelectionSkipped):
        bpr = make_model("bpr", epochs=6, check_every=2, patience=1, dim=4).fit(
            split.train, validate=validator)
    # NaN used to stop it at the first check (epoch 2) with the first fold scale.
    assert bpr.epochs_run == 6 and bpr.fold_scale == 1.0
    plain = make_model("bpr", epochs=6, check_every=2, patience=1, dim=4).fit(split.train)
    assert np.array_equal(bpr.item_factors, plain.item_factors)
    assert np.isfinite(bpr.item_factors[items]).all()


def test_mf_and_bpr_refuse_a_nan_validation_value(synthetic):
    split = make_split(synthetic, "new-user", seed=0)
    with pytest.raises(ThawError, match="NaN with reg"):
        make_model("mf", iterations=1, dim=4).fit(split.train, validate=lambda m: float("nan"))
    with pytest.raises(ThawError, match="NaN with fold scale"):
        make_model("bpr", epochs=2, check_every=1, dim=4).fit(
            split.train, validate=lambda m: float("nan"))


def test_evaluate_without_validation_users_warns_once_and_reports_it(synthetic):
    split = _no_validation_split(synthetic)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = evaluate({"pop": make_model("pop"), "mf": make_model("mf", iterations=2, dim=4),
                           "bpr": make_model("bpr", epochs=2, dim=4)},
                          split, ks=(0, 1), progress=False, n_bootstrap=20)
    assert len(_skipped(record)) == 1
    assert any("model selection skipped" in note for note in result.warnings)
    assert set(result.table["model"]) == {"pop", "mf", "bpr"}
