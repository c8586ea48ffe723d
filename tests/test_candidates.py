"""Candidates: no negative, sampled or full-ranking, is an item of the user's own history, in
any split kind; and the support never carries the held-out user's id."""

import warnings

import numpy as np
import pytest

from thaw.data.splits import make_split, read_split_folder
from thaw.eval.episodes import episodes

KINDS = ["new-user", "new-item", "both", "temporal", "warm", "external"]


def _split(data, kind, tmp_path):
    if kind != "external":
        return make_split(data, kind, seed=0)
    # An external folder cut like a new-user split, negatives sampled by the reader.
    roles = {}
    inner = make_split(data, "new-user", seed=0)
    for role, part in (("val", inner.val), ("test", inner.test)):
        roles |= {int(u): role for u in part}
    inter = data.interactions
    lines = ["user,item,rating,ts,role"] + [
        f"{data.user_ids[u]},{data.item_ids[i]},{r},{t},{roles.get(int(u), 'train')}"
        for u, i, r, t in zip(inter.user, inter.item, inter.rating, inter.ts, strict=True)]
    folder = tmp_path / "external"
    folder.mkdir()
    (folder / "interactions.csv").write_text("\n".join(lines) + "\n")
    return read_split_folder(folder, data)


def _own_items(data):
    inter = data.interactions
    return {int(u): set(inter.item[inter.user == u].tolist()) for u in np.unique(inter.user)}


@pytest.fixture(scope="module")
def own(synthetic):
    return _own_items(synthetic)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("candidates", ["sampled", "full"])
def test_no_negative_is_an_item_of_the_users_own_history(synthetic, own, tmp_path, kind, candidates):
    split = _split(synthetic, kind, tmp_path)
    pool = set(split.held_items.tolist()) if len(split.held_items) else set(range(synthetic.n_items))
    checked = 0
    for part in ("val", "test"):
        for k in (0, 1, 3):
            for ep in episodes(split, part, k, "next-item", max_k=3, candidates=candidates):
                seq = split.sequences(part)[ep.user]
                assert ep.candidates[0] == seq.item[k]
                negatives = set(ep.candidates[1:].tolist())
                assert len(negatives) == len(ep.candidates) - 1  # no duplicates
                assert not negatives & own[ep.user], (kind, candidates, ep.user)
                if candidates == "full":  # every other item of the pool is a candidate
                    assert negatives == pool - own[ep.user]
                checked += 1
    assert checked


@pytest.mark.parametrize("kind", KINDS)
def test_the_support_never_carries_the_held_out_users_id(synthetic, tmp_path, kind):
    split = _split(synthetic, kind, tmp_path)
    for protocol in ("next-item", "rating"):
        eps = episodes(split, "test", 3, protocol, max_k=3)
        assert eps
        for ep in eps:
            assert np.all(ep.context.history.user == -1)
            assert np.array_equal(ep.context.history.item, split.test[ep.user].item[:3])
            assert ep.context.user == (ep.user if split.users_known else None)


def test_full_ranking_excludes_the_warm_users_training_items(synthetic):
    # The warm split's held-out users keep their earlier half in training: those items are
    # theirs too, though not in the sequence episodes are cut from.
    split = make_split(synthetic, "warm", seed=0)
    train = split.train.interactions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        eps = episodes(split, "test", 1, "next-item", max_k=1, candidates="full")
    for ep in eps:
        trained = set(train.item[train.user == ep.user].tolist())
        assert trained and not trained & set(ep.candidates[1:].tolist())
