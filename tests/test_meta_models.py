"""MeLU, MAML, HML and their baselines: the ideas work on planted structure, not just the code."""

import numpy as np
import pytest
import torch

from thaw.data.schema import Interactions
from thaw.data.splits import make_split
from thaw.data.synthetic import make_preference_clusters, make_synthetic
from thaw.eval.protocol import evaluate
from thaw.models.base import Context
from thaw.models.neural import pad_and_stack
from thaw.registry import make_model


@pytest.fixture(scope="module")
def planted():
    """Four hidden taste clusters, invisible in profiles and popularity: only the support tells."""
    data = make_preference_clusters(n_users=400, n_items=60, n_clusters=4, seed=0)
    split = make_split(data, "new-user", seed=0)
    same = {"epochs": 20, "lr": 1e-3, "inner_steps": 2, "inner_lr": 0.05}
    models = {"finetune": make_model("finetune", **same),
              "maml": make_model("maml", **same),
              "hml": make_model("hml", n_inits=4, **same),
              "pop": make_model("pop")}
    result = evaluate(models, split, protocol="rating", ks=(3,), progress=False, n_bootstrap=100)
    result.meta["hml_cluster_sizes"] = models["hml"].cluster_sizes.tolist()
    return result.table[result.table["metric"] == "mae"].set_index("model")["value"], result


def test_maml_beats_finetune_at_k3_on_planted_clusters(planted):
    mae, _ = planted
    assert mae["maml"] < mae["finetune"] - 0.03
    assert mae["maml"] < mae["pop"]


def test_hml_with_one_init_per_cluster_beats_maml_at_k3(planted):
    mae, result = planted
    # Every initialisation took a share of the meta-training tasks (no collapse onto one).
    sizes = result.meta["hml_cluster_sizes"]
    assert min(sizes) > 0.05 * sum(sizes)
    assert mae["hml"] < mae["maml"] - 0.05
    comp = result.comparisons
    lead = comp[(comp["metric"] == "mae") & (comp["model_a"] == "hml") & (comp["model_b"] == "maml")]
    assert lead["better"].iloc[0] == "hml" and bool(lead["significant"].iloc[0])  # Holm-corrected


@pytest.fixture(scope="module")
def small_split():
    return make_split(make_synthetic(n_users=80, n_items=40, seed=4), "new-user", seed=0)


def test_hml_with_one_initialisation_is_melu_number_for_number(small_split):
    melu = make_model("melu", epochs=2, lr=5e-3)
    hml = make_model("hml", n_inits=1, epochs=2, lr=5e-3)  # the same settings as MeLU
    a = evaluate({"m": melu}, small_split, protocol="rating", ks=(1, 3), progress=False, n_bootstrap=10)
    b = evaluate({"m": hml}, small_split, protocol="rating", ks=(1, 3), progress=False, n_bootstrap=10)
    assert np.array_equal(a.per_user["value"].to_numpy(), b.per_user["value"].to_numpy())
    assert melu.history == hml.history


@pytest.mark.parametrize("name", ["melu", "maml", "fomaml", "hml", "finetune", "widedeep", "deepfm"])
def test_batch_scoring_equals_one_by_one_and_new_items_are_scored(name, small_split):
    model = make_model(name, epochs=1)
    model.set_task("next-item")
    model.fit(small_split.train)
    users = list(small_split.test)[:3]
    contexts = [Context(None, small_split.test[u].take(slice(0, k)), small_split.train.profile(u))
                for u, k in zip(users, (1, 3, 0), strict=True)]
    items = [np.arange(10), np.arange(5, 25), np.arange(40)]
    batched = model.score_many(contexts, items)
    for ctx, its, out in zip(contexts, items, batched, strict=True):
        assert np.allclose(model.score(ctx, its), out, atol=1e-5)
        assert np.all(np.isfinite(out))


def test_adaptation_uses_the_support(small_split):
    model = make_model("melu", epochs=2, inner_steps=3, inner_lr=0.5)
    model.set_task("rating")
    model.fit(small_split.train)
    user = next(iter(small_split.test))
    seq = small_split.test[user]
    items = np.arange(40)
    high = Interactions.of(seq.item[:3], [5.0, 5.0, 5.0])
    low = Interactions.of(seq.item[:3], [1.0, 1.0, 1.0])
    profile = small_split.train.profile(user)
    lifted = model.predict(Context(None, high, profile), items)
    sunk = model.predict(Context(None, low, profile), items)
    assert lifted.mean() > sunk.mean() + 0.1


def test_new_items_share_one_code_and_are_scored_through_features():
    data = make_synthetic(n_users=60, n_items=30, seed=5)
    split = make_split(data, "new-item", seed=0)
    model = make_model("melu", epochs=1)
    model.set_task("rating")
    model.fit(split.train)
    held = split.held_items
    assert np.all(model.space.item_code[held] == 0)
    assert torch.all(model.net.item.weight[0] == 0)  # the shared new-item code never trains
    user = next(iter(split.test))
    out = model.predict(Context(user, Interactions.empty(), {}), held)
    assert np.all(np.isfinite(out)) and out.std() > 0  # features still tell new items apart


def test_choice_weights_become_the_hard_choice_as_the_temperature_goes_to_zero():
    from thaw.meta.hml import choice_weights

    losses = torch.tensor([[0.30, 0.10, 0.20], [0.50, 0.50, 0.40], [0.2, 0.2, 0.9]])
    hard = choice_weights(losses, 0.0)
    assert torch.equal(hard, torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert torch.allclose(choice_weights(losses[:2], 1e-4), hard[:2], atol=1e-6)
    assert torch.allclose(choice_weights(losses, float("inf")), torch.full((3, 3), 1 / 3))
    soft = choice_weights(losses, 0.1)
    assert torch.allclose(soft.sum(1), torch.ones(3)) and soft[0, 1] > soft[0, 2] > soft[0, 0]


def test_soft_hml_at_temperature_zero_is_hml_number_for_number(small_split):
    """Trained the paper's way and choosing hard, hml-soft is hml; a small temperature stays
    close to it, a large one does not."""
    same = {"n_inits": 3, "epochs": 2, "seed": 1}
    hml = make_model("hml", **same).fit(small_split.train)
    soft = make_model("hml-soft", temperature=0.0, temperature_grid=(), train_choice="query", lr=1e-3,
                      **same).fit(small_split.train)
    assert hml.history == soft.history
    users = list(small_split.test)[:6]
    contexts = [Context(None, small_split.test[u].take(slice(0, 3)), small_split.train.profile(u))
                for u in users]
    items = [np.arange(small_split.train.n_items)] * len(contexts)
    hard_out = np.array(hml.predict_many(contexts, items))
    assert np.allclose(np.array(soft.predict_many(contexts, items)), hard_out, atol=1e-5)
    soft.temperature = 1e-6
    assert np.allclose(np.array(soft.predict_many(contexts, items)), hard_out, atol=1e-4)
    soft.temperature = float("inf")
    assert not np.allclose(np.array(soft.predict_many(contexts, items)), hard_out, atol=1e-4)


def test_soft_hml_chooses_its_temperature_on_validation_and_can_train_the_choice(small_split):
    from thaw.eval.protocol import SplitValidator

    validate = SplitValidator(small_split, "rating", ks=(1, 3))
    model = make_model("hml-soft", n_inits=2, epochs=1, train_choice="support",
                       temperature_grid=(0.0, 0.1, float("inf")))
    model.set_task("rating")
    model.fit(small_split.train, validate=validate)
    assert set(model.temperature_scores) == {0.0, 0.1, float("inf")}
    assert model.temperature == max(model.temperature_scores, key=model.temperature_scores.get)
    assert model.cluster_sizes.sum() > 0


def test_soft_hml_trains_the_choice_by_protocol_unless_told():
    model = make_model("hml-soft")
    model.set_task("rating")
    assert model.choice_in_training() == "support"
    model.set_task("next-item")
    assert model.choice_in_training() == "query"
    assert make_model("hml-soft", train_choice="support").choice_in_training() == "support"


def test_one_users_adaptation_is_reused_until_the_support_or_the_weights_change(small_split, monkeypatch):
    model = make_model("fomaml", epochs=1)
    model.set_task("next-item")
    model.fit(small_split.train)
    calls = []
    adapt = model.maml.adapted_one  # one user's adaptation (a batch goes through ``adapted``)
    monkeypatch.setattr(model.maml, "adapted_one", lambda support: calls.append(1) or adapt(support))
    user = next(iter(small_split.test))
    seq, profile = small_split.test[user], small_split.train.profile(user)
    ctx = Context(None, seq.take(slice(0, 3)), profile)
    items = np.arange(40)
    first = model.score(ctx, items)
    model.confidence(ctx, first)  # the stack asks this after the scores: the same adaptation
    assert np.array_equal(model.score(Context(None, seq.take(slice(0, 3)), profile), items), first)
    assert len(calls) == 1
    longer = model.score(Context(None, seq.take(slice(0, 4)), profile), items)  # a new event
    assert len(calls) == 2 and not np.array_equal(longer, first)
    with torch.no_grad():  # a training step (in place) makes every kept adaptation stale
        for p in model.net.parameters():
            p.mul_(1.5)
    changed = model.score(ctx, items)
    assert len(calls) == 3 and not np.allclose(changed, first)
    model.net.load_state_dict({k: v / 1.5 for k, v in model.net.state_dict().items()})
    assert np.allclose(model.score(ctx, items), first, atol=1e-5) and len(calls) == 4


@pytest.fixture(scope="module", params=["fomaml", "melu"])
def meta_learner(request, small_split):
    model = make_model(request.param, epochs=1)
    model.set_task("next-item")
    return model.fit(small_split.train)


def contexts(split, ks=(0, 1, 3, 5)):
    users = list(split.test)[:len(ks)]
    return [Context(None, split.test[u].take(slice(0, k)), split.train.profile(u))
            for u, k in zip(users, ks, strict=True)]


def test_one_users_scores_and_confidence_are_the_batched_ones(meta_learner, small_split):
    """One user is adapted by plain autograd and scored without vmap, their support's outputs
    computed with the candidates; a batch of users goes through vmap as before."""
    ctxs, items = contexts(small_split), np.arange(small_split.train.n_items)
    batched = meta_learner.score_many(ctxs, [items] * len(ctxs))
    for ctx, expected in zip(ctxs, batched, strict=True):
        meta_learner._adapted = None  # nothing kept from an earlier request
        alone = meta_learner.score(ctx, items)
        assert np.allclose(alone, expected, rtol=1e-5, atol=1e-5)
        rows = pad_and_stack([meta_learner._support_rows(ctx)])
        with torch.no_grad():
            fitted = meta_learner.maml.predict(meta_learner.maml.adapted(rows), rows)[0]
        slow = 0.0 if len(ctx.history) == 0 else -float(meta_learner.loss()(fitted, rows["target"][0], rows["mask"][0]))
        assert meta_learner.confidence(ctx, alone) == pytest.approx(slow, rel=1e-5, abs=1e-6)
        meta_learner._adapted = None  # asked before any score: computed, not read from the scores
        assert meta_learner.confidence(ctx, alone) == pytest.approx(slow, rel=1e-5, abs=1e-6)


def test_adapting_one_task_matches_the_vmapped_adaptation(meta_learner, small_split):
    ctx = contexts(small_split)[2]
    support = pad_and_stack([meta_learner._support_rows(ctx)])
    batched = meta_learner.maml.adapted(support)
    alone = meta_learner.maml.adapted_one({k: v[0] for k, v in support.items()})
    start, _ = meta_learner.maml.detached_params(None)
    assert set(alone) == set(batched)
    for name, value in alone.items():
        assert torch.allclose(value, batched[name][0], rtol=1e-5, atol=1e-6), name
    assert any(not torch.equal(alone[k], start[k]) for k in alone)  # it moved


@pytest.mark.parametrize("name", ["deepfm", "widedeep"])
def test_one_user_through_the_kept_item_side_is_the_networks_forward(name, small_split):
    """A profile-only feature model scores one user from a per-item table computed once (the
    first layer, FM and wide terms split into item and user parts): the outputs are forward's,
    and the table follows the weights when they change."""
    model = make_model(name, epochs=1)
    model.set_task("next-item")
    model.fit(small_split.train)
    every = np.arange(small_split.train.n_items)

    def forward(ctx, items):
        rows = model._candidate_rows([ctx], [items])
        with torch.no_grad():
            return model.net(rows).numpy()[0, :len(items)]

    for ctx in contexts(small_split) + [Context(None)]:
        for items in (every, every[::-3]):
            assert np.allclose(model.score(ctx, items), forward(ctx, items), rtol=1e-5, atol=1e-5)
    ctx = contexts(small_split)[1]
    before = model.score(ctx, every)
    with torch.no_grad():  # a training step (in place) makes the kept table stale
        for p in model.net.parameters():
            p.mul_(1.5)
    after = model.score(ctx, every)
    assert not np.allclose(after, before) and np.allclose(after, forward(ctx, every), rtol=1e-5, atol=1e-5)
