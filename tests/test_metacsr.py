"""metaCSR: its equations entry by entry, gradients reaching both halves, consistent scoring,
and the planted walk learned through the protocol."""

import math
import warnings

import numpy as np
import pytest
import torch

from conftest import history
from test_sequential import walking_dataset
from thaw.data.splits import make_split
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.meta.metacsr import DiffusionRepresenter, MaskedSelfAttention, position_masks
from thaw.models.base import Context
from thaw.registry import make_model, model_names

VARIANTS = ["metacsr", "metacsr-nodiffusion", "metacsr-noseq", "metacsr-nometa"]
SMALL = {"dim": 16, "epochs": 1, "batch_size": 16}


@pytest.fixture(scope="module")
def walk_split():
    return make_split(walking_dataset(), "new-user", seed=0)


@pytest.fixture(scope="module")
def small_split():
    return make_split(walking_dataset(n_users=120, n_items=30, seed=1), "new-user", seed=0)


@pytest.fixture(scope="module")
def fitted(small_split):
    return {name: make_model(name, **SMALL).fit(small_split.train) for name in VARIANTS}


def test_position_masks_are_equations_3_and_4():
    fw, bw = position_masks(4)
    inf, e = -math.inf, math.e
    expected_fw = [[inf, -e, -e ** 2, -e ** 3],
                   [inf, inf, -e, -e ** 2],
                   [inf, inf, inf, -e],
                   [inf, inf, inf, inf]]
    expected_fw = torch.tensor(expected_fw)
    for got, want in ((fw, expected_fw), (bw, expected_fw.T)):
        assert torch.equal(torch.isinf(got), torch.isinf(want))
        finite = torch.isfinite(want)
        assert torch.allclose(got[finite], want[finite])


def test_diffusion_rows_are_unit_norm_and_only_neighbours_move_them():
    torch.manual_seed(0)
    users, items = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 3])
    rep = DiffusionRepresenter(n_items=5, n_users=3, dim=8, users=users, items=items, hops=1)
    with torch.no_grad():
        before = rep()
        assert torch.allclose(before[[0, 1, 3]].norm(dim=-1), torch.ones(3))
        assert torch.isfinite(before).all()  # items 2 and 4 have no neighbour: h = 0, no NaN
        rep.users.weight[0] += torch.randn(8)  # user 0 touched items 0 and 1 only
        after = rep()
    assert not torch.allclose(after[0], before[0]) and not torch.allclose(after[1], before[1])
    assert torch.equal(after[[2, 3, 4]], before[[2, 3, 4]])


def test_two_hops_reach_items_through_users():
    torch.manual_seed(0)
    users, items = np.array([0, 0, 1]), np.array([0, 1, 2])
    rep = DiffusionRepresenter(n_items=3, n_users=2, dim=8, users=users, items=items, hops=2)
    with torch.no_grad():
        before = rep()
        rep.items.weight[0] += torch.randn(8)  # item 1 shares user 0 with item 0; item 2 does not
        after = rep()
    assert not torch.allclose(after[1], before[1])
    assert torch.equal(after[2], before[2])


def test_masked_rows_give_zeros_and_one_item_gives_relu_b3():
    torch.manual_seed(0)
    att = MaskedSelfAttention(dim=4, max_len=5, attention_dim=3)
    x = torch.randn(3, 5, 4, requires_grad=True)
    valid = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 1, 1]], dtype=torch.float32)
    out = att(x * valid.unsqueeze(-1), valid)
    relu_b3 = torch.relu(att.out.bias)
    assert torch.equal(out[0], relu_b3) and torch.equal(out[1], relu_b3)
    assert not torch.allclose(out[2], relu_b3)  # two items: each direction has one key
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in att.parameters())
    assert torch.isfinite(x.grad).all()


def test_meta_step_reaches_the_representer_and_the_sequence_model(small_split):
    model = make_model("metacsr", **SMALL)
    model._build(small_split.train)
    batch = next(model.tasks.epoch(16, np.random.default_rng(0)))
    model.batch_loss(batch).backward()
    grads = {n: p.grad for n, p in model.net.named_parameters()}
    for name in ("representer.items.weight", "representer.users.weight",
                 "representer.hops.0.latent.weight", "representer.hops.0.combine.weight",
                 "sequence.out.weight", "sequence.key.weight", "sequence.score"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name


def test_meta_gradient_through_the_shared_item_table_matches_finite_differences(small_split):
    """The table is read outside the vectorised tasks; the second-order path must survive."""
    model = make_model("metacsr", dim=4, attention_dim=2, max_len=4, inner_lr=1.0)
    model._build(small_split.train)
    model.net.double()
    batch = next(model.tasks.epoch(4, np.random.default_rng(0)))
    for part in (batch.support, batch.query):
        for k, v in part.items():
            if v.is_floating_point():
                part[k] = v.double()
    weight = model.net.representer.users.weight
    model.batch_loss(batch).backward()
    user = int(small_split.train.interactions.user[0])
    eps = 1e-6
    for j in range(4):
        with torch.no_grad():
            weight[user, j] += eps
            up = model.batch_loss(batch).item()
            weight[user, j] -= 2 * eps
            down = model.batch_loss(batch).item()
            weight[user, j] += eps
        assert weight.grad[user, j].item() == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-9)


@pytest.mark.parametrize("name", VARIANTS)
def test_score_many_equals_score(fitted, name):
    model = fitted[name]
    rng = np.random.default_rng(1)
    contexts = [Context(None, history(rng.choice(30, size=k, replace=False))) for k in (0, 1, 3, 7, 30)]
    items = [rng.choice(30, size=n, replace=False) for n in (5, 30, 1, 17, 30)]
    many = model.score_many(contexts, items)
    for ctx, cands, batch in zip(contexts, items, many, strict=True):
        assert np.array_equal(model.score(ctx, cands), batch)


def test_empty_history_is_deterministic_and_fits_are_reproducible(fitted, small_split):
    model = fitted["metacsr"]
    first = model.score(Context(None), np.arange(30))
    assert np.isfinite(first).all() and len(np.unique(first)) > 1
    assert np.array_equal(first, model.score(Context(None), np.arange(30)))
    again = make_model("metacsr", **SMALL).fit(small_split.train)
    ctx = Context(None, history([3, 4, 5]))
    assert np.array_equal(model.score(ctx, np.arange(30)), again.score(ctx, np.arange(30)))


def test_the_four_variants_are_registered_and_differ(fitted):
    assert set(VARIANTS) <= set(model_names())
    ctx = Context(None, history([3, 4, 5, 6]))
    scores = {name: fitted[name].score(ctx, np.arange(30)) for name in VARIANTS}
    for i, a in enumerate(VARIANTS):
        for b in VARIANTS[i + 1:]:
            assert not np.allclose(scores[a], scores[b]), (a, b)
    assert not fitted["metacsr"].predicts_ratings


def test_planted_walk_is_learned_through_the_protocol(walk_split):
    models = {"pop": make_model("pop"), "metacsr": make_model("metacsr", epochs=3)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateResultWarning)
        result = evaluate(models, walk_split, ks=(1, 3), progress=False, n_bootstrap=50)
    hit1 = result.table.pivot_table(index="model", columns=["metric", "K"], values="value")["hit@1"]
    assert hit1.loc["metacsr", 3] > 0.8
    assert hit1.loc["metacsr", 3] > hit1.loc["pop", 3] + 0.6
    assert models["metacsr"].epochs_run == len(models["metacsr"].history) >= 1
