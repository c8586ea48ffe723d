"""MetaTL: the transition vector, the task sampler, the engine's adaptation, and a planted
rule that a transition model should learn far better than SASRec."""

import warnings

import numpy as np
import pytest
import torch

from conftest import history
from thaw.data.splits import by_user, chronological_order, make_split
from thaw.data.synthetic import make_step_walks
from thaw.eval.protocol import DegenerateResultWarning, evaluate
from thaw.meta.metatl import TransitionNet, TransitionTasks, margin_loss
from thaw.models.base import Context
from thaw.registry import make_model, model_names


@pytest.fixture(scope="module")
def walks():
    return make_split(make_step_walks(n_users=600, n_items=400), "new-user", seed=0)


@pytest.fixture(scope="module")
def fitted(walks):
    small = {"epochs": 2, "tasks_per_user": 4}
    return {name: make_model(name, **small).fit(walks.train) for name in ("metatl", "metatl-nomaml")}


def _pairs(heads, tails, size=5):
    n = len(heads)

    def pad(v):
        return torch.tensor(list(v) + [0] * (size - n))

    return {"pair_head": pad(heads), "pair_tail": pad(tails),
            "pair_mask": torch.tensor([1.0] * n + [0.0] * (size - n))}


def test_registry_has_metatl_and_its_ablation():
    assert {"metatl", "metatl-nomaml"} <= set(model_names())
    assert make_model("metatl").use_maml and not make_model("metatl-nomaml").use_maml


def test_transition_of_identical_pairs_equals_one_pair():
    torch.manual_seed(0)
    net = TransitionNet(n_items=20, dim=8)
    one = net.relation(_pairs([3], [7]))
    same = net.relation(_pairs([3, 3, 3, 3], [7, 7, 7, 7]))
    other = net.relation(_pairs([3, 4], [7, 9]))
    torch.testing.assert_close(one, same)
    assert not torch.allclose(one, other)
    # No pair at all: the learned prior (plus the adaptable shift) stands in.
    torch.testing.assert_close(net.relation(_pairs([], [])), net.prior + net.shift)


def test_translation_score_and_margin_loss_by_hand():
    torch.manual_seed(0)
    net = TransitionNet(n_items=10, dim=4)
    x = {**_pairs([1], [2], size=2), "head": torch.tensor([5]), "tail": torch.tensor([6]),
         "negative": torch.tensor([[7, 8]])}
    scores = net(x)
    e = net.items.weight
    tr = torch.sigmoid(net.transition(torch.cat([e[1], e[2]]))) + net.shift
    expected = torch.stack([-(e[5] + tr - e[j]).norm() for j in (6, 7, 8)])
    torch.testing.assert_close(scores[0], expected)
    loss = margin_loss(1.0)(scores, torch.zeros(1), torch.ones(1))
    e = expected.detach()
    hand = sum(max(0.0, 1.0 - float(e[0]) + float(e[j])) for j in (1, 2)) / 2
    assert float(loss.detach()) == pytest.approx(hand, rel=1e-6)


def test_sampled_tasks_follow_the_users_order_and_avoid_their_items(walks):
    inter = walks.train.interactions
    inter = inter.take(chronological_order(inter, 0))
    seqs = [s.item for s in by_user(inter).values()]
    tasks = TransitionTasks(inter, walks.train.n_items, max_support=5, n_negatives=3, consecutive=0.5)
    batch = tasks.sample(np.arange(len(seqs)), np.random.default_rng(0))
    s, q = batch.support, batch.query
    for row, seq in enumerate(seqs):
        n = int(s["pair_mask"][row].sum())
        chain = [int(v) for v in s["pair_head"][row, :n]] + ([int(s["pair_tail"][row, n - 1])] if n else [])
        if n:
            assert chain[1:] == [int(v) for v in s["pair_tail"][row, :n]]  # pairs chain up
            assert int(q["head"][row, 0]) == chain[-1]
        window = chain + [int(q["tail"][row, 0])] if n else [int(q["tail"][row, 0])]
        where = [int(np.flatnonzero(seq == item)[0]) for item in window]
        assert where == sorted(where) and len(set(where)) == len(where)  # in order, no repeats
        assert not np.isin(batch.support["negative"][row].numpy()[:n], seq).any()
        assert not np.isin(batch.query["negative"][row].numpy(), seq).any()
    assert set(s["pair_mask"].sum(1).tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_maml_step_adapts_the_transition_only_when_there_are_pairs(fitted):
    model = fitted["metatl"]
    engine = model._scoring_engine()
    rows = [model._rows(np.array(items), None, np.array(items), np.random.default_rng(0))
            for items in ([4], [4, 6, 8, 10])]
    fast = engine.adapted({k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]})
    start = engine.split_params()[0]
    assert all(torch.equal(fast[k][0], start[k]) for k in start)        # one item: no pair
    assert any(not torch.equal(fast[k][1], start[k]) for k in start)    # three pairs: moved


@pytest.mark.parametrize("name", ["metatl", "metatl-nomaml"])
def test_score_many_equals_score_and_handles_empty_history(fitted, name):
    model = fitted[name]
    rng = np.random.default_rng(1)
    contexts = [Context(None, history(rng.choice(400, size=k, replace=False))) for k in (0, 1, 2, 5, 14)]
    items = [rng.choice(400, size=n, replace=False) for n in (5, 400, 1, 17, 30)]
    for ctx, cands, batch in zip(contexts, items, model.score_many(contexts, items), strict=True):
        assert np.array_equal(model.score(ctx, cands), batch)
        assert np.array_equal(np.isfinite(batch), model.known[cands])  # never-trained items: -inf
    assert len(np.unique(model.score(Context(None), np.arange(400)))) > 1


def test_fitting_is_reproducible_and_the_ablation_differs(walks, fitted):
    again = make_model("metatl", epochs=2, tasks_per_user=4).fit(walks.train)
    ctx = Context(None, history([10, 12, 14]))
    assert np.array_equal(again.score(ctx, np.arange(400)), fitted["metatl"].score(ctx, np.arange(400)))
    assert not np.array_equal(fitted["metatl"].score(ctx, np.arange(400)),
                              fitted["metatl-nomaml"].score(ctx, np.arange(400)))


def test_planted_strides_metatl_and_sasrec_both_learn_the_rule_at_k3(walks):
    """The issue hoped for MetaTL "well above" SASRec here. That held (0.85 vs 0.57) only
    while SASRec stopped early on its popularity plateau; with enough patience it reached
    0.82, and trained with a cross-entropy over the catalogue (its default since issue 11)
    0.91, ahead of MetaTL. What is asserted is the honest finding: both learn the strides,
    MetaTL from two transition pairs, neither far behind the other."""
    models = {"pop": make_model("pop"), "sasrec": make_model("sasrec"),
              "metatl": make_model("metatl", epochs=4, tasks_per_user=16)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateResultWarning)
        result = evaluate(models, walks, ks=(1, 3), progress=False, n_bootstrap=20)
    hit1 = result.table.pivot_table(index="model", columns=["metric", "K"], values="value")["hit@1"]
    # Seen on seed 0: metatl 0.850, sasrec 0.908, pop 0.000 at K = 3.
    assert hit1.loc["metatl", 3] > 0.75 and hit1.loc["sasrec", 3] > 0.75
    assert hit1.loc["metatl", 3] > hit1.loc["pop", 3] + 0.7
    assert abs(hit1.loc["metatl", 3] - hit1.loc["sasrec", 3]) < 0.15
