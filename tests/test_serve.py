"""thaw serve in process: the API over a tiny stack fitted on synthetic data, SQLite store."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

from thaw.errors import ThawError
from thaw.models.base import Context
from thaw.serve.app import MAX_BATCH, create_app
from thaw.serve.service import LRU, Live, Service
from thaw.serve.store import SCHEMA_VERSION, Store, schema_version
from thaw.stack.router import band_label, band_of


@pytest.fixture()
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'thaw.db'}")
    s.init()
    yield s
    s.close()


@pytest.fixture()
def service(tiny_stack, store):
    svc = Service(tiny_stack, store)
    svc.seed_store()
    return svc


@pytest.fixture()
def client(service):
    return TestClient(create_app(service))


def events(user, items, start=0, prefix=None):
    prefix = prefix or user
    return {"events": [{"event_id": f"{prefix}-{start + k}", "user": user, "item": item, "rating": 5.0,
                        "kind": "rating", "ts": 1000 + start + k} for k, item in enumerate(items)]}


def top(client, user, n=10, **params):
    response = client.get(f"/v1/users/{user}/recommendations", params={"n": n, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_new_users_events_adapt_the_next_recommendations(client, service):
    cold = top(client, "newbie")
    assert cold["k"] == 0 and cold["route"]["band"] == "0" and not cold["cached"]
    history = ["i3", "i7", "i11"]
    assert client.post("/v1/events", json=events("newbie", history)).json()["stored"] == 3
    warm = top(client, "newbie")
    assert warm["k"] == 3 and not warm["cached"]
    table = service.model.tables["next-item"]
    row = table[band_of(3, service.model.bands)]
    assert warm["route"]["band"] == band_label(service.model.bands[band_of(3, service.model.bands)])
    # The learned stacker answers with every member it reads; the table's row would name its own.
    learned = service.model.learned.get("next-item")
    answering = learned["members"] if learned else row["members"]
    assert warm["route"]["members"] == (["segment-pop"] if warm["route"]["breaker_tripped"] else answering)
    assert [x["item"] for x in warm["items"]] != [x["item"] for x in cold["items"]]
    assert not {x["item"] for x in warm["items"]} & set(history)
    with_seen = top(client, "newbie", n=60, exclude_seen="false")
    assert set(history) <= {x["item"] for x in with_seen["items"]}
    assert top(client, "newbie")["cached"]
    # the next event invalidates the cached answer
    client.post("/v1/events", json=events("newbie", ["i20"], start=3))
    fourth = top(client, "newbie")
    assert not fourth["cached"] and fourth["k"] == 4 and "i20" not in {x["item"] for x in fourth["items"]}


def test_the_same_store_gives_the_same_recommendations_after_a_restart(tiny_stack, store, client):
    client.post("/v1/events", json=events("again", ["i1", "i2", "i5"]))
    before = top(client, "again")
    fresh = TestClient(create_app(Service(tiny_stack, Store(store.url))))
    after = top(fresh, "again")
    assert after["items"] == before["items"] and after["route"] == before["route"]


def test_events_are_idempotent_on_event_id(client, store):
    batch = events("u-idem", ["i1", "i2", "i3"])
    first = client.post("/v1/events", json=batch).json()
    assert first == {"stored": 3, "duplicates": [], "created_users": ["u-idem"], "created_items": []}
    again = client.post("/v1/events", json=batch).json()
    assert again["stored"] == 0 and sorted(again["duplicates"]) == ["u-idem-0", "u-idem-1", "u-idem-2"]
    twice_in_one = {"events": batch["events"][:1] * 2}
    assert client.post("/v1/events", json=twice_in_one).json()["stored"] == 0
    assert [e["event_id"] for e in client.get("/v1/users/u-idem/history").json()["events"]] == [
        "u-idem-0", "u-idem-1", "u-idem-2"]
    assert store.count_events() == 3


def test_unknown_items_are_rejected_whole_unless_created(client, store):
    batch = events("u-new", ["i1", "not-an-item"])
    response = client.post("/v1/events", json=batch)
    assert response.status_code == 422
    assert "not-an-item" in response.text and response.json()["detail"][0]["items"] == ["not-an-item"]
    assert store.count_events() == 0 and store.user("u-new") is None  # nothing of the batch stored
    created = client.post("/v1/events", params={"create_items": "true"}, json=batch).json()
    assert created["stored"] == 2 and created["created_items"] == ["not-an-item"]
    assert store.item("not-an-item") is not None
    ranked = top(client, "u-new", n=1000, exclude_seen="false")
    assert "not-an-item" in {x["item"] for x in ranked["items"]}


@pytest.mark.parametrize("event, field", [
    ({"user": "u", "item": "i1"}, "event_id"),
    ({"event_id": "e" * 129, "user": "u", "item": "i1"}, "event_id"),
    ({"event_id": "e", "user": "bad id", "item": "i1"}, "user"),
    ({"event_id": "e", "user": "u", "item": "i1", "kind": "DROP TABLE"}, "kind"),
    ({"event_id": "e", "user": "u", "item": "i1", "ts": -5}, "ts"),
    ({"event_id": "e", "user": "u", "item": "i1", "rating": "five"}, "rating"),
    ({"event_id": "e", "user": "u", "item": "i1", "extra": 1}, "extra"),
])
def test_bad_fields_are_422s_naming_the_field(client, store, event, field):
    response = client.post("/v1/events", json={"events": [events("ok", ["i1"])["events"][0], event]})
    assert response.status_code == 422
    assert field in [str(part) for d in response.json()["detail"] for part in d["loc"]]
    assert store.count_events() == 0


def test_batches_and_bodies_are_bounded(client, store):
    big = events("u-big", ["i1"] * (MAX_BATCH + 1))
    assert client.post("/v1/events", json=big).status_code == 413
    huge = {"features": {"title": "x"}, "text": "y" * 20_001}
    assert client.put("/v1/items/x", json=huge).status_code == 422
    response = client.post("/v1/events", content=b"{" + b" " * (3 * 1024 * 1024) + b"}",
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert store.count_events() == 0


def test_a_new_item_is_recommendable_at_once_through_content(client, service):
    # a user who liked every Horror item of the catalogue; then a new Horror item arrives
    features = service.data.item_features
    horror = [str(service.data.item_ids[k]) for k, g in enumerate(features["genres"]) if "Horror" in g]
    assert len(horror) >= 3
    client.post("/v1/events", json=events("fan", horror))
    before = top(client, "fan", n=1000)
    put = client.put("/v1/items/new-horror", json={"features": {"title": "Horror story 999", "genres": ["Horror"],
                                                                "year": 1990}, "text": ""})
    assert put.json() == {"id": "new-horror", "created": True}
    after = top(client, "fan", n=1000)
    ranked = [x["item"] for x in after["items"]]
    assert not after["cached"] and len(ranked) == len(before["items"]) + 1 and "new-horror" in ranked
    other = client.put("/v1/items/new-western", json={"features": {"title": "Western story 998",
                                                                   "genres": ["Western"], "year": 1990}})
    assert other.status_code == 200
    # content tells them apart by what the user liked, for this user and for a Western fan
    ranked = [x["item"] for x in top(client, "fan", n=1000)["items"]]
    assert ranked.index("new-horror") < ranked.index("new-western")
    western = [str(service.data.item_ids[k]) for k, g in enumerate(features["genres"]) if "Western" in g]
    client.post("/v1/events", json=events("cowboy", western))
    ranked = [x["item"] for x in top(client, "cowboy", n=1000)["items"]]
    assert ranked.index("new-western") < ranked.index("new-horror")


def test_a_new_item_competes_with_the_catalogue_on_what_the_user_liked(client, service):
    """The page's question: where does a film added after the fit rank for a user with three
    ratings? One described like what they liked ranks above the typical catalogue item of
    that genre; one that matches nothing of it stays in the lower half; with no history at
    all (its similarity undefined, its popularity unknown) a new item sits in the middle."""
    features = service.data.item_features
    ids = [str(i) for i in service.data.item_ids]
    horror = [k for k, g in enumerate(features["genres"]) if "Horror" in g]
    support = [ids[k] for k in horror[:3]]
    client.post("/v1/events", json=events("k3", support))
    year = int(features["year"].iloc[horror[0]])
    client.put("/v1/items/new-match", json={"features": {"title": "Horror story 777", "genres": ["Horror"],
                                                         "year": year}})
    client.put("/v1/items/new-none", json={"features": {"title": "Quiet garden", "genres": ["Musical"]}})
    answer = top(client, "k3", n=1000)
    assert answer["k"] == 3
    rank = {x["item"]: r for r, x in enumerate(answer["items"], start=1)}
    same_genre = sorted(rank[ids[k]] for k in horror[3:])
    assert rank["new-match"] < np.median(same_genre), (rank["new-match"], same_genre)
    assert rank["new-none"] > len(rank) / 2, (rank["new-none"], len(rank))
    client.put("/v1/users/profiled", json={"profile": {"gender": "F", "age": 25}})
    for user in ("nobody", "profiled"):  # no profile: the popularity prior; a profile: its neighbours'
        cold = top(client, user, n=1000)
        assert cold["k"] == 0
        rank = {x["item"]: r for r, x in enumerate(cold["items"], start=1)}
        for item in ("new-match", "new-none"):
            assert len(rank) / 4 < rank[item] < 3 * len(rank) / 4, (user, item, rank[item], len(rank))


def test_a_new_items_place_depends_on_the_stacks_order_not_on_how_its_scores_are_spread(
        client, service, monkeypatch):
    """Ranking is order: stretching the stack's scores (a monotone map) moves no item, new
    items included; a new item's content z-score set among the stack's z-scores did move."""
    client.post("/v1/events", json=events("spread", ["i3", "i7", "i11"]))
    for name, title, genres in (("new-a", "Horror story 997", ["Horror"]), ("new-b", "Quiet garden", ["Musical"]),
                                ("new-c", "Drama story 996", ["Drama"])):
        client.put(f"/v1/items/{name}", json={"features": {"title": title, "genres": genres, "year": 1990}})
    before = [x["item"] for x in top(client, "spread", n=1000)["items"]]
    scored = service.model.score
    monkeypatch.setattr(service.model, "score", lambda ctx, items: np.exp(3.0 * scored(ctx, items)))
    service.cache.pop("spread")
    assert [x["item"] for x in top(client, "spread", n=1000)["items"]] == before


def test_anonymous_recommendations_store_nothing(client, store):
    body = {"profile": {"gender": "F", "age": 25}, "history": [{"item": "i3"}, {"item": "i7", "rating": 4}],
            "n": 5}
    response = client.post("/v1/recommendations", json=body)
    assert response.status_code == 200
    out = response.json()
    assert out["user"] is None and out["k"] == 2 and len(out["items"]) == 5
    assert not {"i3", "i7"} & {x["item"] for x in out["items"]}
    assert store.count_events() == 0
    assert client.post("/v1/recommendations", json={"history": [{"item": "nope"}]}).status_code == 422


def test_profiles_and_history(client, store):
    assert client.put("/v1/users/alice", json={"profile": {"gender": "F", "age": 31}}).json()["created"]
    assert not client.put("/v1/users/alice", json={"profile": {"gender": "F", "age": 32}}).json()["created"]
    client.post("/v1/events", json=events("alice", ["i4", "i2"]))
    history = client.get("/v1/users/alice/history").json()
    assert history["profile"] == {"gender": "F", "age": 32}
    assert [(e["event_id"], e["item"]) for e in history["events"]] == [("alice-0", "i4"), ("alice-1", "i2")]
    assert client.get("/v1/users/nobody/history").status_code == 404
    # the bundled data's users and items are in the store with their features
    assert store.item("i3")["features"]["genres"]
    assert store.user("u0") is not None


def test_health_readiness_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/v1/events", json=events("m", ["i1", "i2"]))
    top(client, "m")
    top(client, "m")
    text = client.get("/metrics").text
    assert 'thaw_requests_total{method="POST",route="/v1/events",status="200"} 1' in text
    assert 'thaw_request_seconds_count{method="GET",route="/v1/users/{user}/recommendations"} 2' in text
    assert "thaw_events_stored_total 2" in text and "thaw_cache_hits_total 1" in text
    assert "thaw_breaker_trips_total" in text
    assert client.get("/openapi.json").json()["paths"]["/v1/events"]


def test_workers_sharing_a_folder_each_answer_a_scrape_with_the_sum_of_all(tmp_path):
    from thaw.serve.metrics import Metrics

    first, second = Metrics(tmp_path, name="a"), Metrics(tmp_path, name="b")
    first.count("thaw_events_stored_total", 3)
    second.count("thaw_events_stored_total", 4)
    first.observe("thaw_model_seconds", 0.002)
    second.observe("thaw_model_seconds", 0.2)
    second.flush()  # what its thread does within a second
    text = first.render()
    assert "thaw_events_stored_total 7" in text and "thaw_metrics_workers 2" in text
    assert "thaw_model_seconds_count 2" in text and 'thaw_model_seconds_bucket{le="0.0025"} 1' in text
    alone = Metrics()  # no shared folder: its own totals only
    alone.count("thaw_events_stored_total", 3)
    assert "thaw_events_stored_total 3" in alone.render() and "thaw_metrics_workers 1" in alone.render()


def test_schema_is_versioned_and_a_newer_one_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert Store(url).init() == 0
    assert Store(url).init() == SCHEMA_VERSION and Store(url).version() == SCHEMA_VERSION
    newer = Store(url)
    with newer.writer.begin() as conn:
        conn.execute(schema_version.update().values(version=SCHEMA_VERSION + 1))
    with pytest.raises(ThawError, match="upgrade thaw"):
        Store(url).init()
    with Store(url).reader.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


def test_lru_is_bounded():
    cache = LRU(2)
    for k in range(3):
        cache.put(k, k)
    assert cache.get(0) is None and cache.get(2) == 2 and len(cache) == 2
    cache.get(1)
    cache.put(3, 3)
    assert cache.get(1) == 1 and cache.get(2) is None


def test_the_answer_is_the_stacks_own_ranking(service):
    """No model logic in the service: a user's ranking is the stack's over its catalogue."""
    from thaw.data.schema import Interactions
    from thaw.models.base import Context, top_n

    items = service.data.item_index(["i3", "i7", "i11"])
    service.store.add_events(events("same", ["i3", "i7", "i11"])["events"])
    picked = service.recommend("same", 10).items
    ctx = Context(None, Interactions.of(items, [5.0] * 3, [1000, 1001, 1002]), {})
    expected, _ = top_n(service.model, ctx, np.arange(service.data.n_items), 10)
    assert [i for i, _ in picked] == [str(service.data.item_ids[i]) for i in expected]


def test_explored_slates_are_logged_with_propensities_and_replayable(tiny_stack, client, service, store, tmp_path):
    from thaw.bandits.cli import bandit_replay
    from thaw.bandits.offline import read_log_csv

    client.post("/v1/events", json=events("explorer", ["i3", "i7"]))
    plain = top(client, "explorer", n=30)
    out = top(client, "explorer", n=10, explore="true")
    assert out["slate_id"] and out["cached"]  # the stack's answer is reused; only the slots differ
    first, rest = out["items"][:2], out["items"][2:]
    pool = [x["item"] for x in plain["items"][:20]]
    assert all(x["item"] in pool and 0 < x["propensity"] <= 1 for x in first)
    assert all(x["propensity"] is None for x in rest)
    picked = {x["item"] for x in first}
    assert [x["item"] for x in rest] == [x["item"] for x in plain["items"] if x["item"] not in picked][:8]
    # the outcome of an explored slot, once; an item not explored there is a 404
    body = {"slate_id": out["slate_id"], "item": first[0]["item"], "reward": 1.0}
    assert client.post("/v1/feedback", json=body).json() == {"recorded": True}
    assert client.post("/v1/feedback", json=body).json() == {"recorded": False}
    assert client.post("/v1/feedback", json={**body, "item": rest[0]["item"]}).status_code == 404
    assert client.post("/v1/feedback", json={**body, "reward": 2}).status_code == 422
    assert service.policy.n_updates == 1
    for k in range(5):
        top(client, f"explorer{k}", n=5, explore="true")
    log = client.get("/v1/exploration/log.csv")
    assert log.status_code == 200 and log.text.startswith("item,reward,user,propensity,candidates")
    path = tmp_path / "log.csv"
    path.write_text(log.text)
    parsed, _ = read_log_csv(path)
    assert len(parsed) == 12 and parsed.rewards.sum() == 1.0 and parsed.propensities is not None
    assert all(len(c) == 20 - (k % 2) for k, c in enumerate(parsed.candidates))  # slot 2: slot 1's item is out
    bandit_replay(log=path, policies="random,thompson")  # `thaw bandit-replay --log` on the service's own log
    # a restarted service's policy has learned the stored rewards again
    again = Service(tiny_stack, Store(store.url))
    assert again.restore_policy() == 1 and again.policy.n_updates == 1


def test_tokens_guard_writes_and_reads_by_scope(service):
    from thaw.serve.auth import Auth, parse_tokens

    writer, reader = "w" * 20, "r" * 20
    auth = Auth(parse_tokens(f"{writer}=read,write; {reader}=read"))
    c = TestClient(create_app(service, auth))
    body = events("guarded", ["i1"])
    assert c.post("/v1/events", json=body).status_code == 401
    assert c.post("/v1/events", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert c.post("/v1/events", json=body, headers={"Authorization": f"Bearer {reader}"}).status_code == 403
    assert c.post("/v1/events", json=body, headers={"Authorization": f"Bearer {writer}"}).status_code == 200
    assert c.get("/v1/users/guarded/recommendations").status_code == 401
    assert c.get("/v1/users/guarded/recommendations", headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    assert c.get("/healthz").status_code == 200 and c.get("/metrics").status_code == 200
    with pytest.raises(ThawError, match="scope"):
        parse_tokens(f"{writer}=root")
    with pytest.raises(ThawError, match="16 characters"):
        parse_tokens("short=read")


def test_serve_refuses_an_open_api_off_loopback(tiny_stack, tmp_path, monkeypatch):
    from thaw.serve.cli import serve

    monkeypatch.delenv("THAW_API_TOKENS", raising=False)
    with pytest.raises(ThawError, match="loopback only"):
        serve(tiny_stack, db=f"sqlite:///{tmp_path / 'x.db'}", host="0.0.0.0", port=0, workers=1)


def test_admin_reload_swaps_the_model_between_requests(tiny_stack, service, tmp_path):
    from thaw.persist import load, save
    from thaw.serve.auth import Auth, parse_tokens

    admin, writer = "a" * 20, "w" * 20
    c = TestClient(create_app(service, Auth(parse_tokens(f"{admin}=admin {writer}=read,write"))))
    head = {"Authorization": f"Bearer {admin}"}
    before = c.get("/v1/users/r/recommendations", headers=head).json()["model_version"]
    refit = load(tiny_stack)
    refit.learned = {}  # the band table answers, and its first row now names pop
    refit.tables["next-item"][0] = {**refit.tables["next-item"][0], "members": ["pop"], "weights": [1.0],
                                    "threshold": None}
    save(refit, tmp_path / "refit")
    assert c.post("/v1/admin/reload", json={"model_dir": str(tmp_path / "refit")},
                  headers={"Authorization": f"Bearer {writer}"}).status_code == 403
    out = c.post("/v1/admin/reload", json={"model_dir": str(tmp_path / "refit")}, headers=head)
    assert out.status_code == 200 and out.json()["previous"] == before != out.json()["model_version"]
    after = c.get("/v1/users/r/recommendations", headers=head).json()
    assert after["model_version"] == out.json()["model_version"] and after["route"]["members"] == ["pop"]
    assert c.post("/v1/admin/reload", json={"model_dir": str(tmp_path / "none")}, headers=head).status_code == 422
    assert "thaw_reloads_total 1" in c.get("/metrics").text


def test_a_good_prior_makes_thompson_sampling_regret_less_early():
    from thaw.bandits.policies import ThompsonBeta
    from thaw.bandits.simulate import bernoulli_world, run_policy
    from thaw.serve.exploration import PriorThompson

    means = np.random.default_rng(0).beta(1, 3, size=200)
    world = bernoulli_world(means)
    noisy = np.clip(means + np.random.default_rng(1).normal(0, 0.05, len(means)), 0.01, 0.99)
    informed = PriorThompson(lambda ctx, cands: noisy[cands], strength=10.0, seed=0)
    uniform = ThompsonBeta(seed=0)
    t = 2000
    assert run_policy(world, informed, t, seed=0).regret[-1] < 0.5 * run_policy(world, uniform, t, seed=0).regret[-1]
    decision = informed.decide(world.contexts[0], world.items, 2)
    assert np.all((decision.propensities > 0) & (decision.propensities <= 1))
    # evidence moves it off a wrong prior: an arm the prior rates best but that never pays
    wrong = PriorThompson(lambda ctx, cands: np.where(cands == 0, 0.9, 0.5), strength=10.0, seed=0)
    for _ in range(200):
        wrong.update(world.contexts[0], 0, 0.0)
    assert wrong.action_probabilities(world.contexts[0], np.arange(5))[0] < 0.05


def test_retrain_refits_on_the_stores_events_and_reload_serves_it(tiny_stack, service, client, store, tmp_path):
    """First click -> retrained model -> served: the new user and the new item are in the
    refitted model's data, and a reload serves the new version."""
    import thaw
    from thaw.serve.retrain import retrain

    item = {"features": {"genres": ["Drama"]}, "text": "a new film"}
    assert client.put("/v1/items/fresh", json=item).status_code < 300
    posted = events("clicker", ["i3", "i7", "fresh"])
    assert client.post("/v1/events", json=posted).json()["stored"] == 3
    before = client.get("/v1/users/clicker/recommendations").json()["model_version"]
    done = retrain(store.url, tiny_stack, tmp_path / "retrained", seed=0)
    assert done["from_store"] == 3
    assert done["interactions"] == len(thaw.load(tiny_stack).dataset.interactions) + 3
    saved, base = thaw.load(done["path"]).dataset, thaw.load(tiny_stack).dataset
    assert "fresh" in set(saved.item_ids) and "fresh" not in set(base.item_ids)
    # the store's events stay in the store, not in the saved data too (never counted twice)
    assert len(saved.interactions) == len(base.interactions) and "clicker" in set(saved.user_ids)
    reloaded = client.post("/v1/admin/reload", json={"model_dir": str(done["path"])})
    assert reloaded.status_code == 200, reloaded.text
    after = client.get("/v1/users/clicker/recommendations").json()
    assert after["model_version"] != before and reloaded.json()["model_version"] == after["model_version"]
    assert not {x["item"] for x in after["items"]} & {"i3", "i7", "fresh"} and after["k"] == 3


def test_retrain_refuses_a_store_that_is_not_one(tiny_stack, tmp_path):
    from thaw.serve.retrain import retrain

    with pytest.raises(ThawError, match="holds no thaw store"):
        retrain(f"sqlite:///{tmp_path / 'empty.db'}", tiny_stack, tmp_path / "out")
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "thaw", "retrain", "--model", str(tiny_stack), "--out",
                           str(tiny_stack), "--db", f"sqlite:///{tmp_path / 'x.db'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "must not be the folder being served" in done.stderr


def test_exploration_starts_from_the_stacks_scores(client, service):
    """Prior-informed Thompson sampling: before any feedback the explored slots lean to the
    stack's own top candidates, and the prior orders the pool as the stack's scores do."""
    from thaw.serve.service import score_prior

    p = score_prior(np.array([3.0, 2.0, 1.0, -np.inf]), 0.2)
    assert np.all(np.diff(p) < 0) and 0 < p[-1] < p[0] < 1
    plain = top(client, "leaner", n=20)
    best, worst = plain["items"][0]["item"], plain["items"][-1]["item"]
    shown = [x["item"] for k in range(30) for x in top(client, "leaner", n=5, explore="true")["items"][:2]]
    assert shown.count(best) > shown.count(worst)
    assert service.policy.label == "thompson-prior"


def test_a_source_history_needs_a_model_with_a_source_domain(client):
    out = client.post("/v1/recommendations", json={"source": [{"item": "b1", "rating": 5}]})
    assert out.status_code == 422 and "cross-domain pair" in out.json()["detail"][0]["msg"]


def test_ratings_off_the_scale_or_not_finite_are_422s_that_render(client, store):
    """Issue 25: NaN was a 500 (its 422 could not be rendered); 99 and 1e308 were stored."""
    for rating in (99, 1e308, -3, 0):
        response = client.post("/v1/events", json={"events": [{"event_id": "e", "user": "u", "item": "i1",
                                                               "rating": rating}]})
        assert response.status_code == 422, (rating, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "events", 0, "rating"]
        assert "outside the rating scale of the model's data set, 1 to 5" in response.text
    for raw in (b"NaN", b"Infinity", b"-Infinity"):
        for path, body in (("/v1/events", b'{"events": [{"event_id": "e", "user": "u", "item": "i1", "rating": %s}]}'),
                           ("/v1/recommendations", b'{"history": [{"item": "i1", "rating": %s}]}')):
            response = client.post(path, content=body % raw, headers={"content-type": "application/json"})
            assert response.status_code == 422 and "rating" in response.json()["detail"][0]["loc"], response.text
    response = client.post("/v1/recommendations", json={"history": [{"item": "i1", "rating": 6}]})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "history", 0, "rating"]
    assert store.count_events() == 0 and store.user("u") is None


def test_a_profile_value_that_is_not_a_number_where_the_data_has_numbers_is_a_422(client, store):
    response = client.put("/v1/users/careless", json={"profile": {"age": "abc", "gender": "F"}})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "profile", "age"]
    assert store.user("careless") is None
    assert client.put("/v1/users/careless", json={"profile": {"age": "31"}}).status_code == 200
    assert store.user("careless")["profile"] == {"age": 31.0}  # a number written as text is read as one
    response = client.post("/v1/recommendations", json={"profile": {"age": True}})
    assert response.status_code == 422 and "age is a number" in response.text


def test_admin_reload_refuses_a_model_fitted_on_another_catalogue(client, tmp_path):
    from thaw.data.synthetic import make_synthetic
    from thaw.persist import save
    from thaw.registry import make_model

    for n_items, message in ((20, "40 items of the model it would replace are not among its items"),
                             (80, "20 of its items are not in the store")):
        foreign = make_synthetic(n_users=30, n_items=n_items, seed=5)
        model = make_model("pop").fit(foreign)
        model.dataset = foreign
        save(model, tmp_path / str(n_items))
        before = client.get("/v1/users/r/recommendations").json()["model_version"]
        response = client.post("/v1/admin/reload", json={"model_dir": str(tmp_path / str(n_items))})
        assert response.status_code == 422 and message in response.text, response.text
        assert client.get("/v1/users/r/recommendations").json()["model_version"] == before


def test_serve_checks_its_port_store_folder_and_model_before_creating_the_store(tiny_stack, tmp_path, monkeypatch):
    import socket

    from thaw.serve.cli import serve

    monkeypatch.delenv("THAW_API_TOKENS", raising=False)
    db = tmp_path / "thaw.db"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        for kwargs, message in (({"port": 99999}, "--port must be a TCP port, 0 to 65535"),
                                ({"port": -1}, "--port must be a TCP port"),
                                ({"port": busy.getsockname()[1]}, "cannot listen on 127.0.0.1"),
                                ({"db": f"sqlite:///{tmp_path / 'missing' / 'thaw.db'}"}, "does not exist"),
                                ({"model_dir": tmp_path / "no-model"}, "no-model")):
            args = {"model_dir": tiny_stack, "db": f"sqlite:///{db}", "host": "127.0.0.1", "port": 0,
                    "workers": 1, **kwargs}
            with pytest.raises(ThawError, match=message):
                serve(**args)
            assert not db.exists() and not (tmp_path / "missing").exists()


def test_a_schema_1_store_is_upgraded_with_its_rewards_summed_into_the_evidence(client, service, store):
    """A store written by the schema-1 service (rewards only in thaw_feedback) is upgraded in
    place: the evidence per (segment, item) arm is the sum of its stored rewards, and a fresh
    service's policy starts from it."""
    from thaw.serve.store import evidence, models, revisions

    client.put("/v1/users/f25", json={"profile": {"gender": "F", "age": 25}})
    client.post("/v1/events", json=events("f25", ["i3"]))
    shown = []
    for _ in range(3):
        out = top(client, "f25", n=5, explore="true")
        shown.append((out["slate_id"], out["items"][0]["item"]))
        client.post("/v1/feedback", json={"slate_id": out["slate_id"], "item": out["items"][0]["item"], "reward": 1.0})
    expected = {}
    for _, item in shown:
        expected[item] = expected.get(item, 0) + 1.0
    with store.writer.begin() as conn:  # back to what schema 1 had
        conn.execute(evidence.delete())
        conn.execute(models.delete())
        conn.execute(revisions.delete().where(revisions.c.name != "catalogue"))
        conn.execute(schema_version.update().values(version=1))
    assert Store(store.url).init() == 1 and Store(store.url).version() == SCHEMA_VERSION
    arms = client.get("/v1/exploration/evidence").json()
    assert {a["item"]: a["trials"] for a in arms["arms"]} == expected
    assert all(a["segment"] == ["F", a["segment"][1]] and a["successes"] == a["trials"] for a in arms["arms"])
    assert arms["trials"] == 3.0
    fresh = Service(service.model_dir, Store(store.url))
    assert fresh.restore_policy() == 3
    key = ("F", arms["arms"][0]["segment"][1])
    assert fresh.policy.counts[key][fresh.index[arms["arms"][0]["item"]]] == arms["arms"][0]["trials"]


def test_k0_answers_are_cached_per_profile_and_equal_the_models(service):
    profile = {"gender": "F", "age": 30}
    service.put_user("first", profile)
    service.put_user("second", profile)
    service.put_user("other", {"gender": "M", "age": 60})
    first = service.recommend("first", 10)
    second = service.recommend("second", 10)
    assert not first.cached and second.cached and second.answer is first.answer
    fresh = service.answer("second", profile, [])
    assert np.array_equal(second.answer.scores, fresh.scores) and second.items == first.items
    assert not service.recommend("other", 10).cached  # another profile: its own answer
    assert service.recommend_anonymous(profile, [], 10).cached  # the same profile, inline
    service.add_events([{"event_id": "e1", "user": "first", "item": service.item_ids[0], "rating": 5.0,
                         "kind": "rating", "ts": 1}])
    assert not service.recommend("first", 10).cached and service.recommend("first", 10).answer.k == 1


def test_a_new_item_or_a_reload_invalidates_the_k0_cache(service, tiny_stack):
    service.put_user("a", {"gender": "F"})
    service.put_user("b", {"gender": "F"})
    service.put_user("c", {"gender": "F"})
    before = service.recommend("a", 10)
    service.put_item("brand-new", {"title": "Brand New", "genres": ["Horror"], "year": 2001}, "")
    after = service.recommend("b", 10)
    assert not after.cached and after.answer.catalogue_size == before.answer.catalogue_size + 1
    assert service.recommend("c", 10).cached
    reloaded = Live(service).reload(tiny_stack)
    assert not reloaded.recommend("a", 10).cached


def test_an_answer_the_breaker_tripped_is_not_cached(service, monkeypatch):
    model = service.model
    member = next(m for m in model.needed("next-item", Context(None, profile={})) if m != "segment-pop")
    monkeypatch.setattr(model.members[member], "score", lambda ctx, items: np.full(len(items), np.nan))
    service.put_user("a", {})
    service.put_user("b", {})
    tripped = service.recommend("a", 10)
    assert tripped.answer.route["breaker_tripped"]
    assert not service.recommend("b", 10).cached


def test_a_service_warms_its_model_up_before_its_first_request(tiny_stack, store, monkeypatch):
    """What the model builds on first use is paid at start, not by the first user (on a busy
    machine it ran past a member's time budget and sent that request to the fallback)."""
    from thaw.stack import Stack

    asked = []
    score = Stack.score
    monkeypatch.setattr(Stack, "score",
                        lambda self, ctx, items: asked.append(len(ctx.history)) or score(self, ctx, items))
    Service(tiny_stack, store, warm=False)
    assert asked == []
    Service(tiny_stack, store)
    assert asked == [0, 1]


def test_putting_an_item_does_not_wait_for_the_model(service):
    """A PUT is the store's write alone; the item reaches the catalogue on the next request."""
    import threading

    done = threading.Event()

    def put() -> None:
        service.put_item("quick", {"title": "Quick", "genres": ["Drama"], "year": 1990}, "")
        done.set()

    with service.lock:  # a recommendation holding the model
        writer = threading.Thread(target=put)
        writer.start()
        assert done.wait(10)
    writer.join()
    ranked = service.recommend("someone", 1000).items
    assert "quick" in {item for item, _ in ranked}
