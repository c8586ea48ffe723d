"""The peer harness (benchmarks/peers.py): what it feeds the public implementations and how it
joins their per-user values with thaw's. The RecBole and surprise runs need the extra `peers`
(`pip install -e '.[peers]'`) and are skipped without it."""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from thaw.data.splits import make_split
from thaw.data.synthetic import make_synthetic
from thaw.eval.episodes import episodes
from thaw.eval.protocol import SplitValidator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402  (a script under benchmarks/, not a package)


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=60, n_items=40, seed=1), "new-user", seed=0)


def test_refit_data_holds_each_held_user_first_k_and_nothing_after(split):
    k = 3
    data = peers.with_supports(split, k)
    inter = data.interactions
    for seqs in (split.val, split.test):
        for user, seq in seqs.items():
            rows = inter.item[inter.user == user]
            assert rows.tolist() == seq.item[:k].tolist()  # the support, in order; never the target
    train = split.train.interactions
    assert len(inter) == len(train) + sum(min(k, len(s)) for p in (split.val, split.test) for s in p.values())


def test_user_column_read_as_raw_ids_or_as_internal_indices(split):
    data = make_synthetic(n_users=60, n_items=40, seed=1)  # raw ids u0..u59
    users = pd.Series(sorted(split.test))
    raw, how = peers.raw_user_ids(users, data, split)
    named = data.user_ids[users.to_numpy()].astype(str).tolist()
    assert how.startswith("internal") and raw.tolist() == named
    raw, how = peers.raw_user_ids(pd.Series(named), data, split)
    assert how == "raw ids" and raw.tolist() == named
    # MovieLens-like numeric raw ids (raw = index + 1): the two readings are told apart.
    numeric = dataclasses.replace(data, user_ids=np.array([str(u + 1) for u in range(data.n_users)], dtype=object))
    raw, how = peers.raw_user_ids(users + 1, numeric, split)
    assert how == "raw ids" and raw.tolist() == [str(u + 1) for u in users]
    raw, how = peers.raw_user_ids(users, numeric, split)
    assert how.startswith("internal") and raw.tolist() == [str(u + 1) for u in users]
    with pytest.raises(SystemExit):  # a user of no test episode: another split
        peers.raw_user_ids(pd.Series([max(split.train.interactions.user) + 10_000]), numeric, split)


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None and bool(__import__(module))
    except ImportError:  # recbole installed without its dependencies (make setup's copy)
        return False


needs_recbole = pytest.mark.skipif(not (_has("recbole") and _has("recbole.utils")),
                                   reason="RecBole with its dependencies: pip install -e '.[peers]'")
needs_surprise = pytest.mark.skipif(not _has("surprise"), reason="scikit-surprise: pip install -e '.[peers]'")


@needs_recbole
@pytest.mark.parametrize("model", ["SASRec", "BERT4Rec"])
def test_sequence_peer_scores_the_candidates_from_the_support(split, model):
    peers._recbole_compat()
    peer = peers.RecBolePeer(model, epochs=2, patience=2).fit(split.train, SplitValidator(split, "next-item", [1, 3]))
    assert 1 <= len(peer.history) <= 2 and all(np.isfinite(h["validation"]) for h in peer.history)
    eps = episodes(split, "test", 3, "next-item", max_k=3)
    scores = peer.score_many([e.context for e in eps], [e.candidates for e in eps])
    assert [s.shape for s in scores] == [e.candidates.shape for e in eps]
    assert all(np.isfinite(s).all() for s in scores)
    # The support is read: two users' supports give two different score vectors on one candidate set.
    same = [peer.score(e.context, eps[0].candidates) for e in eps[:2]]
    assert not np.allclose(same[0], same[1])


@needs_recbole
def test_general_peer_refit_knows_the_held_users(split):
    peers._recbole_compat()
    val = peers.known_users(episodes(split, "val", 1, "next-item", max_k=3))
    peer = peers.RecBolePeer("BPR", epochs=2, patience=2)
    peer.fit(peers.with_supports(split, 1), peers.EpisodeValidator(val))
    assert set(split.test) <= set(peer.data.users)
    eps = peers.known_users(episodes(split, "test", 1, "next-item", max_k=3))
    scores = peer.score_many([e.context for e in eps[:2]], [eps[0].candidates] * 2)
    assert not np.allclose(scores[0], scores[1])  # each user's own embedding


@needs_surprise
def test_baselineonly_predicts_global_mean_plus_biases_with_the_user_bias_from_the_support(split):
    k = 5
    peer = peers.SurprisePeer("BaselineOnly").fit(peers.with_supports(split, k))
    ep = peers.known_users(episodes(split, "test", k, "rating", max_k=k))[0]
    algo, trainset = peer.algo, peer.algo.trainset

    def item_bias(item: int) -> float:
        try:
            return float(algo.bi[trainset.to_inner_iid(str(item))])
        except ValueError:  # an item nobody in the refit rated
            return 0.0

    bias_u = float(algo.bu[trainset.to_inner_uid(str(ep.user))])
    expected = np.clip([trainset.global_mean + bias_u + item_bias(i) for i in ep.candidates], 1, 5)
    assert bias_u != 0  # the support was fitted
    assert np.allclose(peer.predict(ep.context, ep.candidates), expected)
    unknown = np.clip([trainset.global_mean + item_bias(i) for i in ep.candidates], 1, 5)
    assert np.allclose(peer.predict(dataclasses.replace(ep.context, user=None), ep.candidates), unknown)
