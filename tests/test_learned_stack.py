"""The learned stacker: out-of-fold episodes, per-request weights, save/load, the breaker."""

import numpy as np
import pytest

import thaw
from thaw.data.splits import item_folds, make_split, user_folds
from thaw.data.synthetic import make_synthetic
from thaw.eval.episodes import episodes, score_episodes
from thaw.eval.protocol import SplitValidator, out_of_fold
from thaw.models.base import Context, Recommender, kept_epoch
from thaw.registry import make_model
from thaw.stack import Stack, StackTable

KS = (0, 1, 2, 3, 5, 7, 10)


@pytest.fixture(scope="module")
def split():
    return make_split(make_synthetic(n_users=300, n_items=80, seed=3), "new-user", seed=0)


class RightFor(Recommender):
    """Test double, right for one gender and wrong for the other at every K: the target
    (candidate 0 under next-item) first for that group, last for the rest."""

    def __init__(self, gender, seed=0):
        self.gender, self.seed = gender, seed

    def fit(self, data, validate=None):
        return self

    def score(self, ctx, items):
        noise = np.random.default_rng([self.seed, len(items), len(ctx.history)]).random(len(items))
        right = ctx.profile.get("gender") == self.gender
        return noise + np.where(np.arange(len(items)) == 0, 2.0 if right else -2.0, 0.0)


def mean_ndcg(model, split, ks=(0, 1, 3, 5)):
    rows = [r for k in ks for r in score_episodes(model, episodes(split, "test", k, "next-item", max_k=10),
                                                  "next-item")[0]]
    return float(np.mean([r["ndcg@10"] for r in rows]))


def test_the_learned_stacker_routes_per_profile_where_the_band_table_cannot(split):
    validate = SplitValidator(split, "next-item")
    found = {}
    for stacker in ("fwls", "lgbm", "table"):
        members = {"for-men": RightFor("M"), "for-women": RightFor("F", seed=1),
                   "segment-pop": make_model("segment-pop")}
        stack = Stack(members=members, validation_ks=KS, time_budget=None, stacker=stacker, folds=3)
        found[stacker] = mean_ndcg(stack.fit(split.train, validate=validate), split)
    members = {"for-men": RightFor("M"), "for-women": RightFor("F", seed=1)}
    alone = {name: mean_ndcg(m, split) for name, m in members.items()}
    # Each member is perfect for one group of users (30% and 70% here) and hopeless for the
    # other; one choice per band can do no better than the larger group, a learner that reads
    # the profile can be right for everyone.
    assert max(alone.values()) <= 0.75 and found["table"] <= 0.75
    assert found["fwls"] > 0.95 and found["lgbm"] > 0.95


class Spy(Recommender):
    """Scores every item with a token of the fit that made it, and remembers which users
    each fit was trained on."""

    fits: dict[float, set[int]] = {}

    def __init__(self):
        self.token = None

    def fit(self, data, validate=None):
        self.token = float(len(Spy.fits) + 1)
        Spy.fits[self.token] = set(np.unique(data.interactions.user).tolist())
        return self

    def score(self, ctx, items):
        return np.full(len(items), self.token)


def test_out_of_fold_scores_never_come_from_a_fit_that_saw_the_user(split):
    Spy.fits.clear()
    oof = out_of_fold({"spy": Spy()}, split.train, None, "next-item", 4, KS, 10, seed=0)
    assert len(Spy.fits) == 4 and len(oof.episodes) > 1000
    folds = user_folds(split.train, 4, seed=0)
    for ep, out, fold in zip(oof.episodes, oof.outputs["spy"], oof.fold, strict=True):
        assert ep.user not in Spy.fits[out[0]]
        assert ep.user in folds[fold].val and ep.user not in set(folds[fold].train.interactions.user)
    # Every training user with enough history is scored, each in exactly one fold.
    users = {ep.user for ep in oof.episodes}
    assert users == {u for u, n in zip(*np.unique(split.train.interactions.user, return_counts=True),
                                       strict=True) if n > 10}
    assert all(len({f for e, f in zip(oof.episodes, oof.fold, strict=True) if e.user == u}) == 1
               for u in list(users)[:20])


class ItemSpy(Recommender):
    """Scores every item with a token of the fit that made it, and remembers which items each
    fit was trained on."""

    fits: dict[float, set[int]] = {}

    def fit(self, data, validate=None):
        self.token = float(len(ItemSpy.fits) + 1)
        ItemSpy.fits[self.token] = set(np.unique(data.interactions.item).tolist())
        return self

    def score(self, ctx, items):
        return np.full(len(items), self.token)


def test_item_folds_score_items_as_new_items_no_fit_saw():
    split = make_split(make_synthetic(n_users=300, n_items=80, seed=3), "new-item", seed=0)
    ItemSpy.fits.clear()
    oof = out_of_fold({"spy": ItemSpy()}, split.train, None, "next-item", 3, KS, 3, seed=0, by="items")
    assert len(ItemSpy.fits) == 3 and len(oof.episodes) > 300 and oof.by == "items"
    folds = item_folds(split.train, 3, seed=0)
    held = [set(f.held_items.tolist()) for f in folds]
    assert sorted(i for h in held for i in h) == sorted(np.unique(split.train.interactions.item).tolist())
    for ep, out, fold, counts in zip(oof.episodes, oof.outputs["spy"], oof.fold, oof.item_counts, strict=True):
        seen_by_fit = ItemSpy.fits[out[0]]
        # every candidate (the target and its negatives) is one of the fold's held-out items,
        # none of which the fit that scored it trained on, and the learner is told they are new
        assert set(ep.candidates.tolist()) <= held[fold] and not seen_by_fit & held[fold]
        assert counts[ep.candidates].sum() == 0
        assert ep.context.user == ep.user  # warm users, known by id, as in the new-item split


class EpochSpy(Recommender):
    """Remembers, per fit, how many epochs it was told to train and whether it had a validator."""

    fits: list[tuple[int, bool]] = []

    def __init__(self):
        self.epochs = 20

    def fit(self, data, validate=None):
        EpochSpy.fits.append((self.epochs, validate is not None))
        return self

    def score(self, ctx, items):
        return np.zeros(len(items))


def test_item_fold_fits_train_as_long_as_the_full_fit_kept_user_folds_choose_their_own(split):
    new_item = new_item_split()
    validator = SplitValidator(new_item, "next-item")
    EpochSpy.fits.clear()
    validator.out_of_fold({"spy": EpochSpy()}, new_item.train, "next-item", 3, KS, seed=0, epochs={"spy": 4})
    assert EpochSpy.fits == [(4, False)] * 3
    EpochSpy.fits.clear()
    SplitValidator(split, "next-item").out_of_fold({"spy": EpochSpy()}, split.train, "next-item", 3, KS, seed=0,
                                                   epochs={"spy": 4})
    assert EpochSpy.fits == [(20, True)] * 3


def test_kept_epoch_is_the_first_best_validation_epoch(split):
    model = EpochSpy()
    model.history = [{"epoch": 1, "loss": 1.0, "validation": 0.2}, {"epoch": 2, "loss": 0.9, "validation": 0.3},
                     {"epoch": 3, "loss": 0.8, "validation": 0.3}, {"epoch": 4, "loss": 0.7, "validation": 0.1}]
    assert kept_epoch(model) == 2
    model.history = [{"epoch": 1, "loss": 1.0}]  # fitted without validation: every epoch, none kept
    assert kept_epoch(model) is None
    deepfm = make_model("deepfm", epochs=3)
    deepfm.set_task("next-item")
    deepfm.fit(split.train, validate=SplitValidator(split, "next-item"))
    assert len(deepfm.history) == 3 and all("validation" in r for r in deepfm.history)
    best = max(deepfm.history, key=lambda r: r["validation"])
    assert kept_epoch(deepfm) == best["epoch"] and 1 <= kept_epoch(deepfm) <= 3


def new_item_split():
    return make_split(make_synthetic(n_users=300, n_items=80, seed=3), "new-item", seed=0)


def test_item_folds_keep_each_held_items_first_interactions_as_the_split_does():
    train = make_split(make_synthetic(n_users=300, n_items=80, seed=3), "new-item", seed=0).train
    counts = np.bincount(train.interactions.item, minlength=train.n_items)
    for fold in item_folds(train, 3, seed=0, item_strata=(0, 1, 3)):
        kept = np.bincount(fold.train.interactions.item, minlength=train.n_items)[fold.held_items]
        assert set(kept.tolist()) <= {0, 1, 3} and len(set(kept.tolist())) > 1
        # what a held item kept is its first interactions, and none of them is asked about
        trained = set(zip(fold.train.interactions.user.tolist(), fold.train.interactions.item.tolist(),
                          strict=True))
        for user, seq in fold.val.items():
            assert not {(user, i) for i in seq.item.tolist()} & trained
        assert (kept <= counts[fold.held_items]).all()


def test_a_learned_stack_on_a_new_item_split_learns_from_item_folds():
    split = make_split(make_synthetic(n_users=300, n_items=80, seed=3), "new-item", seed=0)
    stack = Stack(members=["pop", "content", "mf"], validation_ks=(0, 1, 3), time_budget=None,
                  stacker="fwls", folds=2)
    stack.fit(split.train, validate=SplitValidator(split, "next-item", (0, 1, 3)))
    state = stack.learned["next-item"]
    assert state["fold_by"] == "items" and state["oof_episodes"] > 0
    assert "2 folds of items" in stack.explain()


@pytest.mark.parametrize("protocol", ["next-item", "rating"])
@pytest.mark.parametrize("stacker", ["lgbm", "fwls"])
def test_a_learned_stack_round_trips_through_save_and_load(split, tmp_path, protocol, stacker):
    stack = Stack(members=["pop", "segment-pop", "mf"], validation_ks=(0, 1, 3, 5), time_budget=None,
                  stacker=stacker, folds=2)
    stack.set_task(protocol)
    stack.fit(split.train, validate=SplitValidator(split, protocol, (0, 3)))
    assert stack.learned[protocol]["kind"] == stacker
    loaded = thaw.load(thaw.save(stack, tmp_path / "stack"))
    items = np.arange(split.train.n_items)
    for k in (0, 2, 6):
        user = next(iter(split.test))
        ctx = Context(user=None, history=split.test[user].take(slice(0, k)), profile=split.train.profile(user))
        call = "predict" if protocol == "rating" else "score"
        assert np.array_equal(getattr(loaded, call)(ctx, items), getattr(stack, call)(ctx, items))
    assert "answered by the learned stacker: " + stacker in loaded.explain()


class Broken(Recommender):
    def __init__(self):
        self.broken = False

    def fit(self, data, validate=None):
        return self

    def score(self, ctx, items):
        if self.broken:
            raise RuntimeError("member down")
        return np.arange(len(items), dtype=float)


def test_the_breaker_trips_when_a_member_the_learner_reads_fails(split):
    segment_pop = make_model("segment-pop")
    stack = Stack(members={"broken": Broken(), "segment-pop": segment_pop}, validation_ks=(0, 1, 3),
                  time_budget=None, folds=2)
    stack.fit(split.train, validate=SplitValidator(split, "next-item", (0, 3)))
    assert "broken" in stack.learned["next-item"]["members"]
    ctx = Context(user=None, history=split.test[next(iter(split.test))].take(slice(0, 2)),
                  profile={"gender": "F", "age": 30})
    items = np.arange(split.train.n_items)
    stack.score(ctx, items)
    assert stack.last_trips == [False]
    stack.members["broken"].broken = True
    expected = segment_pop.score(ctx, items)
    assert np.array_equal(stack.score(ctx, items), (expected - expected.mean()) / expected.std())
    assert stack.last_trips == [True]


def test_stack_table_is_the_band_table_alone(split):
    stack = StackTable(members=["pop", "segment-pop"], validation_ks=(0, 1, 3), time_budget=None)
    stack.fit(split.train, validate=SplitValidator(split, "next-item", (0, 3)))
    assert stack.name == "stack-table" and not stack.learned and stack.tables["next-item"]
    with pytest.raises(Exception, match="unknown stacker"):
        Stack(members=["pop"], stacker="forest")
    with pytest.raises(Exception, match="at least 2 folds"):
        Stack(members=["pop"], folds=1)


def test_out_of_fold_users_bring_their_source_history_on_cross_domain_data():
    from thaw.transfer import cross_domain_split
    from thaw.transfer.synthetic import make_mapped_domains

    pair = make_mapped_domains(n_users=120, n_source=40, n_target=30, seed=0)
    train = cross_domain_split(pair, 0.2, seed=0).train
    source = train.source_domain.interactions
    for fold in user_folds(train, 3, seed=0):
        assert fold.val and set(fold.sources) == {u for u in fold.val if u in set(source.user)}
        for user, history in fold.sources.items():
            assert (history.user == -1).all()
            assert sorted(history.item) == sorted(source.item[source.user == user])


class Noise(Recommender):
    """Scores that say nothing about the target; counts its calls."""

    def __init__(self):
        self.calls = 0

    def fit(self, data, validate=None):
        return self

    def score(self, ctx, items):
        self.calls += 1
        return np.random.default_rng([7, len(items), len(ctx.history), self.calls]).random(len(items))


@pytest.mark.parametrize("stacker", ["lgbm", "fwls"])
def test_a_member_that_adds_nothing_is_dropped_and_no_longer_asked(split, stacker):
    def fitted(drop_below):
        members = {"for-men": RightFor("M"), "for-women": RightFor("F", seed=1), "noise": Noise(),
                   "segment-pop": make_model("segment-pop")}
        stack = Stack(members=members, validation_ks=KS, time_budget=None, stacker=stacker, folds=3,
                      drop_below=drop_below)
        return stack.fit(split.train, validate=SplitValidator(split, "next-item"))

    kept, lean = fitted(0.0), fitted(0.05)
    ctx = Context(None, split.test[next(iter(split.test))].take(slice(0, 3)), profile={"gender": "M"})
    assert kept.learned["next-item"]["dropped"] == [] and "noise" in kept.needed("next-item", ctx)
    state = lean.learned["next-item"]
    assert state["dropped"] == ["noise"] and set(state["members"]) == {"for-men", "for-women", "segment-pop"}
    assert "dropped (they added nothing validation could see): noise" in lean.explain()
    # The learner without it is as good on test users, and a request no longer asks it.
    assert mean_ndcg(lean, split) > 0.95
    noise = lean.members["noise"]
    calls = noise.calls
    lean.score(ctx, np.arange(split.train.n_items))
    assert noise.calls == calls and "noise" not in lean.needed("next-item", ctx)


class OnlyFor(RightFor):
    """Right for one gender, noise for the other (RightFor's last-for-the-rest is a signal too:
    a learner can read it upside down, so without its twin it adds nothing)."""

    def score(self, ctx, items):
        noise = np.random.default_rng([self.seed, len(items), len(ctx.history)]).random(len(items))
        right = ctx.profile.get("gender") == self.gender
        return noise + np.where((np.arange(len(items)) == 0) & right, 2.0, 0.0)


def test_a_member_the_learner_needs_is_never_dropped(split):
    # Each is the only one right for its group (30% and 70% of users): even told to try
    # dropping every member, the learner keeps both, as validation sees each one's loss.
    members = {"for-men": OnlyFor("M"), "for-women": OnlyFor("F", seed=1),
               "segment-pop": make_model("segment-pop")}
    stack = Stack(members=members, validation_ks=KS, time_budget=None, stacker="lgbm", folds=3,
                  drop_below=0.99)
    stack.fit(split.train, validate=SplitValidator(split, "next-item"))
    assert {"for-men", "for-women"} <= set(stack.learned["next-item"]["members"])
    assert mean_ndcg(stack, split) > 0.95
