"""Cross-domain transfer: on planted data where each user's target taste is a user-specific map
of their source taste, ptupcdr and emcdr beat tgt by far at K = 0; a source permuted across
users trips the negative-transfer alarm; padding never collides with an item; no held-out
user's target interaction reaches fit; the stack gives K = 0 requests with a source their own row
and is learned from the evaluated members whichever are asked for; roles can be given; the
pooled MAE/RMSE are the errors over every query rating; tgt at K = 0 is popularity's item
means; every transfer model selects by the stack's metric."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from thaw.data.schema import Dataset, Interactions
from thaw.errors import DataError, ThawError
from thaw.eval.cross_domain import NegativeTransferWarning, evaluate_transfer, pooled_errors, transfer_stack
from thaw.eval.episodes import episodes
from thaw.eval.protocol import SplitValidator
from thaw.models.base import Context, Recommender
from thaw.models.baselines import Popularity
from thaw.persist import load, save
from thaw.stack.router import SOURCE_ROW, episode_value
from thaw.transfer import cross_domain_split, from_files, genre_domains, permuted_source
from thaw.transfer.base import selection
from thaw.transfer.baselines import CollectiveMF, TargetOnly
from thaw.transfer.emcdr import EMCDR
from thaw.transfer.ptupcdr import PTUPCDR
from thaw.transfer.synthetic import make_mapped_domains

MODELS = ("tgt", "emcdr", "ptupcdr")


@pytest.fixture(scope="module")
def pair():
    return make_mapped_domains(n_users=600, seed=0)


@pytest.fixture(scope="module")
def planted(pair):
    split = cross_domain_split(pair, 0.3, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_transfer(split, protocol="rating", ks=(0,), models=MODELS, stack=False,
                                   progress=False, n_bootstrap=20)
    return split, result


def mae(result, k=0):
    t = result.table
    return t[(t.metric == "mae") & (t.K == k)].set_index("model")["value"]


def test_transfer_beats_target_only_by_far(planted):
    _, result = planted
    m = mae(result)
    assert m["emcdr"] < m["tgt"] - 0.3 and m["ptupcdr"] < m["tgt"] - 0.3, m  # tgt: item means at K = 0
    # PTUPCDR's per-user bridge no longer beats EMCDR here. EMCDR's MLP reads the user's half
    # from the source factor too (the marker items are in it) once the target factorisation is
    # regularised lightly: selected by MAE, its reg is 0.03 on this seed (emcdr 0.468, ptupcdr
    # 0.486), by RMSE it was 0.3 (0.639 against 0.462); the two differ by 0.002 in validation
    # MAE at K = 0. So the test asks for the two to be level, not for an order.
    assert abs(m["ptupcdr"] - m["emcdr"]) < 0.1 * m["emcdr"], m
    assert not [a for a in result.meta["negative_transfer"] if a["model_a"] != "cmf"]


def test_permuted_source_trips_the_alarm(pair):
    split = cross_domain_split(permuted_source(pair, seed=1), 0.3, seed=0)
    with pytest.warns(NegativeTransferWarning, match="negative transfer"):
        result = evaluate_transfer(split, protocol="rating", ks=(0,), models=MODELS, stack=False,
                                   progress=False, n_bootstrap=20)
    flagged = {(a["model_a"], a["K"]) for a in result.meta["negative_transfer"]}
    assert ("ptupcdr", 0) in flagged or ("emcdr", 0) in flagged
    assert all(a["diff"] > 0 for a in result.meta["negative_transfer"])  # MAE higher = worse


def test_permutation_moves_histories_between_users(pair):
    control = permuted_source(pair, seed=1)
    before, after = pair.source.interactions, control.source.interactions
    assert np.array_equal(np.sort(np.unique(before.user)), np.sort(np.unique(after.user)))
    assert np.array_equal(before.item, after.item) and not np.array_equal(before.user, after.user)


def test_no_held_out_target_interaction_reaches_fit(pair):
    split = cross_domain_split(pair, 0.5, seed=3)
    seen: list[Dataset] = []

    class Spy(Recommender):
        name = "spy"

        def fit(self, data, validate=None):
            seen.append(data)
            return self

        def score(self, ctx, items):
            return np.zeros(len(items))

    Spy().fit(split.train)
    held = np.array(sorted({*split.val, *split.test}))
    assert len(held) > 0 and not set(held) & set(seen[0].interactions.user.tolist())
    assert set(split.test).isdisjoint(split.val)
    # Cold users' source histories stay (the protocol), and ride on their episodes.
    source_users = set(seen[0].source_domain.interactions.user.tolist())
    assert set(held) <= source_users
    ep = episodes(split, "test", 0, "rating", max_k=0)[0]
    assert ep.context.user is None and len(ep.context.history) == 0 and len(ep.context.source) > 0
    assert (ep.context.source.user == -1).all()
    overlap = len(pair.overlap)
    assert len(split.test) == round(0.5 * overlap)


def test_padding_never_collides_with_an_item(planted):
    split, _ = planted
    model = PTUPCDR(epochs=1, seed=0).fit(split.train)
    n_items = split.train.source_domain.n_items
    hist = Interactions.of([0, 5, 7], ratings=[5, 5, 5])
    padded = model.source_items([hist])
    assert padded.shape == (1, model.max_items)
    assert (padded[0, 3:] == n_items).all() and n_items not in split.train.source_domain.interactions.item
    net = model.net["rating"]
    assert torch.count_nonzero(net.items[n_items]) == 0
    x = torch.ones(1, model.dim + 1)
    short = net(x, torch.tensor(padded[:, :3]))
    assert torch.allclose(short, net(x, torch.tensor(padded)), atol=1e-6)  # padding is invisible


def test_tgt_at_k0_is_shrunk_item_means_not_a_random_user(planted):
    split, result = planted
    model = TargetOnly(seed=0).fit(split.train)
    pop = Popularity().fit(split.train)
    items = np.arange(10)
    ctx = Context(user=None, source=Interactions.of([1, 2], ratings=[5, 1]))
    assert np.allclose(model.predict(ctx, items), pop.predict(ctx, items))
    # On every test user's ratings at K = 0, tgt's errors are popularity's, not worse.
    eps = episodes(split, "test", 0, "rating", max_k=0)
    errors = {m: np.concatenate([np.abs(m.predict(e.context, e.candidates) - e.truth) for e in eps])
              for m in (model, pop)}
    assert errors[model].mean() <= errors[pop].mean() + 1e-12
    # The pooled MAE the evaluation reports is the mean error over every query rating.
    t = result.table
    pooled = t[(t.metric == "pooled-mae") & (t.K == 0)].set_index("model")["value"]
    assert pooled["tgt"] == pytest.approx(errors[pop].mean())
    assert {"pooled-mae", "pooled-rmse"} <= set(t.metric)


def test_transfer_without_a_source_is_target_only(planted):
    split, _ = planted
    emcdr = EMCDR(epochs=2, seed=0).fit(split.train)
    tgt = TargetOnly(seed=0).fit(split.train)
    support = Interactions.of([3, 4, 9], ratings=[4, 2, 5])
    ctx = Context(user=None, history=support)
    assert np.allclose(emcdr.predict(ctx, np.arange(20)), tgt.predict(ctx, np.arange(20)))
    nothing = Context(user=None)
    assert np.allclose(emcdr.predict(nothing, np.arange(20)), tgt.predict(nothing, np.arange(20)))
    with_source = Context(user=None, history=support, source=Interactions.of([10, 11], ratings=[5, 1]))
    assert not np.allclose(emcdr.predict(with_source, np.arange(20)), tgt.predict(ctx, np.arange(20)))


def test_models_need_a_source_domain(planted):
    split, _ = planted
    plain = split.train.with_interactions(split.train.interactions)
    object.__setattr__(plain, "source_domain", None)
    for model in (EMCDR(), PTUPCDR(), CollectiveMF()):
        with pytest.raises(ThawError, match="cross-domain split"):
            model.fit(plain)


def test_saved_transfer_models_load_and_answer_alike(planted, tmp_path):
    split, _ = planted
    ctx = Context(user=None, history=Interactions.of([1], ratings=[4]),
                  source=Interactions.of([10, 11, 12], ratings=[5, 1, 4]))
    items = np.arange(15)
    for model in (EMCDR(epochs=2, seed=0), PTUPCDR(epochs=1, seed=0), CollectiveMF(seed=0)):
        model.fit(split.train)
        back = load(save(model, tmp_path / model.name))
        assert np.allclose(back.predict(ctx, items), model.predict(ctx, items))
        assert np.allclose(back.score(ctx, items), model.score(ctx, items))


def test_stack_routes_k0_with_a_source_to_its_own_row(pair):
    split = cross_domain_split(pair, 0.3, seed=0)
    stack = transfer_stack(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = evaluate_transfer(split, protocol="rating", ks=(0, 1), models=("pop", "tgt", "cmf", "emcdr",
                                   "ptupcdr"), progress=False, n_bootstrap=5)
    # Learned from the members evaluated here (meta["stacks"]), segment-pop not asked for but
    # evaluated as its fallback; a stack fitted afresh would have no entry there.
    assert sorted(result.meta["stacks"]["stack"]["members"]) == ["cmf", "emcdr", "pop", "ptupcdr",
                                                                 "segment-pop", "tgt"]
    assert "segment-pop" in set(result.table.model)
    table = result.meta["stacks"]["stack"]["table"]
    source_row = table[-1]
    assert source_row["band"] == SOURCE_ROW and source_row["users"] > 0
    assert set(source_row["members"]) & {"emcdr", "ptupcdr", "cmf"}
    m = mae(result)
    assert m["stack"] < m["tgt"] - 0.3
    assert stack._row_of(Context(user=None), len(table)) == 0
    assert stack._row_of(Context(user=None, source=Interactions.of([1])), len(table)) == len(table) - 1


def test_genre_domains_drop_items_of_both_sides():
    ratings = pd.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "z", "x", "w"],
                            "rating": [5, 4, 3, 2, 1], "ts": [1, 2, 3, 4, 5]})
    items = pd.DataFrame({"genres": [("Drama",), ("Comedy",), ("Drama", "Comedy"), ("Comedy",)]},
                         index=["x", "y", "z", "w"])
    pair = genre_domains(Dataset.from_frames("t", ratings, items=items), ("Drama",), ("Comedy",))
    assert list(pair.source.item_ids) == ["x"] and sorted(pair.target.item_ids) == ["w", "y"]
    assert list(pair.overlap) == [0]  # only a rated on both sides


def test_own_pair_from_two_files(tmp_path):
    (tmp_path / "books.csv").write_text("user_id,item_id,rating\nann,b1,5\nbob,b2,3\ncid,b1,4\n")
    (tmp_path / "films.csv").write_text("user_id,item_id,rating\nbob,f1,2\nann,f2,4\ndan,f1,1\n")
    pair = from_files(tmp_path / "books.csv", tmp_path / "films.csv")
    names = list(pair.target.user_ids)
    assert sorted(pair.overlap.tolist()) == sorted([names.index("ann"), names.index("bob")])
    ann = names.index("ann")
    src = pair.source.interactions
    assert pair.source.item_ids[src.item[src.user == ann]].tolist() == ["b1"]
    (tmp_path / "none.csv").write_text("user_id,item_id,rating\nzed,f1,2\n")
    with pytest.raises(Exception, match="share no user"):
        from_files(tmp_path / "books.csv", tmp_path / "none.csv")


def test_command_line_on_your_own_pair(tmp_path):
    import subprocess
    import sys

    pair = make_mapped_domains(n_users=300, seed=4)
    for domain, name in ((pair.source, "source.csv"), (pair.target, "target.csv")):
        frame = domain.interactions.to_frame()
        frame["user"] = domain.user_ids[frame["user"]]
        frame["item"] = domain.item_ids[frame["item"]]
        frame.to_csv(tmp_path / name, index=False)
    # Roles given, not drawn: these 60 overlap users are tested, the next 30 validate.
    names = pair.target.user_ids[pair.overlap].astype(str)
    roles = pd.DataFrame({"user": names[:90], "role": ["test"] * 60 + ["val"] * 30})
    roles.to_csv(tmp_path / "roles.csv", index=False)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "thaw", "transfer", "--source", str(tmp_path / "source.csv"),
                           "--target", str(tmp_path / "target.csv"), "--roles", str(tmp_path / "roles.csv"),
                           "--ks", "0,3", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert SOURCE_ROW in done.stdout and "ptupcdr" in done.stdout
    assert "given roles" in done.stdout and "60 test users" in done.stdout
    assert "pooled-mae (lower is better) by K" in done.stdout and "pooled-rmse" in done.stdout
    results = pd.read_csv(out / "results.csv")
    assert {"random", "pop", "tgt", "cmf", "emcdr", "ptupcdr", "stack"} <= set(results["model"])
    assert {"pooled-mae", "pooled-rmse"} <= set(results["metric"])
    per_user = pd.read_csv(out / "per_user.csv", dtype={"user": str})
    assert set(per_user["user"]) == set(names[:60])
    (tmp_path / "bad.csv").write_text("user,role\n" + f"{names[0]},test\nnobody,test\n")
    bad = subprocess.run([sys.executable, "-m", "thaw", "transfer", "--source", str(tmp_path / "source.csv"),
                          "--target", str(tmp_path / "target.csv"), "--roles", str(tmp_path / "bad.csv")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "line 3" in bad.stderr and "'nobody'" in bad.stderr
    assert "Traceback" not in bad.stderr
    both = subprocess.run([sys.executable, "-m", "thaw", "transfer", "--source", str(tmp_path / "source.csv"),
                           "--target", str(tmp_path / "target.csv"), "--roles", str(tmp_path / "roles.csv"),
                           "--beta", "0.3"], capture_output=True, text=True, timeout=120)
    assert both.returncode != 0 and "without --beta" in both.stderr
    bad = subprocess.run([sys.executable, "-m", "thaw", "transfer", "--source", str(tmp_path / "source.csv")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "needs both --source and --target" in bad.stderr


def test_the_service_serves_transfer_from_an_inline_source_history(pair, tmp_path):
    from fastapi.testclient import TestClient

    from thaw.eval.protocol import SplitValidator
    from thaw.serve.app import create_app
    from thaw.serve.service import Service
    from thaw.serve.store import Store

    split = cross_domain_split(pair, 0.0, seed=0)  # beta = 0: every user but validation trains
    assert not split.test and split.val
    stack = transfer_stack(seed=0)
    stack.set_task("next-item")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stack.fit(split.train, validate=SplitValidator(split, "next-item"))
    stack.dataset = split.train
    store = Store(f"sqlite:///{tmp_path / 'thaw.db'}")
    store.init()
    service = Service(save(stack, tmp_path / "stack"), store)
    client = TestClient(create_app(service))
    source = split.train.source_domain
    rows = source.interactions.take(source.interactions.user == 0)
    history = [{"item": str(source.item_ids[i]), "rating": float(r)}
               for i, r in zip(rows.item, rows.rating, strict=True)]
    with_source = client.post("/v1/recommendations", json={"source": history, "n": 5})
    assert with_source.status_code == 200, with_source.text
    plain = client.post("/v1/recommendations", json={"n": 5}).json()
    assert with_source.json()["route"]["band"] == SOURCE_ROW and plain["route"]["band"] == "0"
    assert [x["item"] for x in with_source.json()["items"]] != [x["item"] for x in plain["items"]]
    bad = client.post("/v1/recommendations", json={"source": [{"item": "no-such-book"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "source"]
    store.close()


def test_given_roles_make_the_split(pair):
    drawn = cross_domain_split(pair, 0.3, seed=2)
    ids = pair.target.user_ids.astype(str)
    # The roles a split drew, handed back, give that split again (negatives included).
    roles = {ids[u]: "test" for u in drawn.test} | {ids[u]: "val" for u in drawn.val}
    again = cross_domain_split(pair, roles=roles, seed=2)
    assert again.test.keys() == drawn.test.keys() and again.val.keys() == drawn.val.keys()
    assert all(np.array_equal(again.negatives[u], drawn.negatives[u]) for u in drawn.negatives)
    assert all(np.array_equal(again.sources[u].item, drawn.sources[u].item) for u in drawn.sources)
    assert np.array_equal(again.train.interactions.user, drawn.train.interactions.user)
    # Any roles at all: these users, as a Series, one of them named "train" explicitly.
    overlap = pair.overlap
    chosen = pd.Series(["test", "test", "val", "train"], index=ids[overlap[:4]])
    split = cross_domain_split(pair, roles=chosen, seed=0)
    assert sorted(split.test) == sorted(overlap[:2].tolist()) and list(split.val) == [overlap[2]]
    assert overlap[3] in set(split.train.interactions.user.tolist())
    assert "given roles" in split.describe()


def test_given_roles_are_checked(pair, tmp_path):
    ids = pair.target.user_ids.astype(str)
    first = ids[pair.overlap[0]]
    with pytest.raises(DataError, match="role is one of train, val, test"):
        cross_domain_split(pair, roles={first: "holdout"})
    with pytest.raises(DataError, match="'ghost' is in neither domain"):
        cross_domain_split(pair, roles={"ghost": "test"})
    with pytest.raises(ThawError, match="not both"):
        cross_domain_split(pair, 0.3, roles={first: "test"})
    with pytest.raises(DataError, match="no overlap user to train"):
        cross_domain_split(pair, roles={u: "test" for u in ids[pair.overlap]})
    (tmp_path / "books.csv").write_text("user_id,item_id,rating\nann,b1,5\nbob,b2,3\ncid,b1,4\n")
    (tmp_path / "films.csv").write_text("user_id,item_id,rating\nbob,f1,2\nann,f2,4\ndan,f1,1\n")
    small = from_files(tmp_path / "books.csv", tmp_path / "films.csv")
    with pytest.raises(DataError, match="'dan' is given the role val but has interactions in only one"):
        cross_domain_split(small, roles={"dan": "val"})
    file = tmp_path / "roles.csv"
    file.write_text(f"user,role\n{first},test\n{first},val\n")
    with pytest.raises(DataError, match=r"roles.csv, line 3: .* two roles, test and val"):
        cross_domain_split(pair, roles=file)
    file.write_text(f"id,kind\n{first},test\n")
    with pytest.raises(DataError, match="header line 'user,role'"):
        cross_domain_split(pair, roles=file)


def test_pooled_errors_are_over_every_rating():
    # User 1: four ratings each 1 off; user 2: one rating 3 off.
    per_user = pd.DataFrame({"model": ["m"] * 4, "K": [0] * 4, "user": [1, 1, 2, 2],
                             "metric": ["mae", "rmse"] * 2, "value": [1.0, 1.0, 3.0, 3.0]})
    sizes = pd.DataFrame({"K": [0, 0], "user": [1, 2], "ratings": [4, 1]})
    pooled = pooled_errors(per_user, sizes, n_bootstrap=50).set_index("metric")
    assert pooled.loc["pooled-mae", "value"] == pytest.approx(7 / 5)  # the per-user mean is 2
    assert pooled.loc["pooled-rmse", "value"] == pytest.approx(np.sqrt(13 / 5))
    assert (pooled["low"] <= pooled["value"]).all() and (pooled["value"] <= pooled["high"]).all()
    assert (pooled["users"] == 2).all()


def test_one_selection_metric_the_stacks(planted):
    split, _ = planted
    validator = SplitValidator(split, "rating", (0, 3))
    model = TargetOnly(seed=0).fit(split.train)
    stack_metric = np.mean([episode_value(model.predict(e.context, e.candidates), e.truth, "rating")[0]
                            for e in validator.episodes])
    assert selection(validator)(model) == pytest.approx(stack_metric)  # minus the mean MAE, not RMSE
    # What a transfer model chooses on validation users is the best by that metric.
    emcdr = EMCDR(epochs=2, seed=0)
    emcdr.set_task("rating")
    emcdr.fit(split.train, validate=validator)
    chosen, values = emcdr.prior_weight, {}
    for weight in EMCDR.prior_grid:
        emcdr.prior_weight = weight
        values[weight] = selection(validator)(emcdr)
    assert chosen == max(values, key=values.get)
