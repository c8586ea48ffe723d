"""Two `thaw serve` processes (replicas) on one throwaway PostgreSQL: what one is told, the
other knows by its next request (events, new items, exploration evidence, a reloaded model),
and killing one with SIGKILL while clients write to both loses or doubles no acknowledged
event."""

import time

import pytest

from test_serve_http import Server, Writers, call, pg_url, postgres, server_log  # noqa: F401 - fixtures


@pytest.fixture()
def replicas(tiny_stack, pg_url, server_log):  # noqa: F811 - pytest fixtures
    servers = [Server(tiny_stack, pg_url, server_log).start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


def top(server, user, **params):
    query = "&".join(f"{k}={v}" for k, v in {"n": 10, **params}.items())
    status, body = call(server.port, "GET", f"/v1/users/{user}/recommendations?{query}")
    assert status == 200, body
    return body


def test_what_one_replica_is_told_the_other_serves_on_its_next_request(replicas):
    a, b = replicas
    before = top(b, "walker")  # b caches walker's K = 0 answer
    assert before["k"] == 0
    seen = [x["item"] for x in before["items"][:3]]
    batch = [{"event_id": f"walk-{k}", "user": "walker", "item": item, "rating": 5, "kind": "rating", "ts": k}
             for k, item in enumerate(seen)]
    assert call(a.port, "POST", "/v1/events", {"events": batch})[0] == 200
    after = top(b, "walker")
    assert after["k"] == 3 and not after["cached"] and not set(seen) & {x["item"] for x in after["items"]}
    # an item put through a (not in the model's fit) is in b's catalogue on its next request
    assert call(a.port, "PUT", "/v1/items/brand-new", {"features": {"title": "Brand New"}})[0] == 200
    everything = top(b, "walker", n=1000)
    assert "brand-new" in {x["item"] for x in everything["items"]}


def test_exploration_evidence_is_summed_over_the_replicas(replicas):
    rewarded = []
    for k in range(6):
        server = replicas[k % 2]
        out = top(server, f"explorer{k}", n=5, explore="true")
        slot = out["items"][k % 2]
        assert slot["propensity"] is not None
        # the reward goes to the other replica than the one that served the slate
        status, body = call(replicas[(k + 1) % 2].port, "POST", "/v1/feedback",
                            {"slate_id": out["slate_id"], "item": slot["item"], "reward": 1.0 if k % 3 else 0.0})
        assert status == 200 and body == {"recorded": True}
        rewarded.append((slot["item"], 1.0 if k % 3 else 0.0))
    views = [call(s.port, "GET", "/v1/exploration/evidence")[1] for s in replicas]
    assert views[0] == views[1]
    assert views[0]["trials"] == 6 and views[0]["successes"] == sum(r for _, r in rewarded)
    per_item: dict[str, float] = {}
    for item, _ in rewarded:
        per_item[item] = per_item.get(item, 0.0) + 1.0
    assert {a["item"]: a["trials"] for a in views[0]["arms"]} == per_item


def test_a_reload_on_one_replica_reaches_the_other(replicas, tiny_stack, tmp_path):
    from thaw.persist import load, save

    a, b = replicas
    first = top(b, "reader")["model_version"]
    refit = save(load(tiny_stack), tmp_path / "refit", provenance={"note": "a refit"})
    status, body = call(a.port, "POST", "/v1/admin/reload", {"model_dir": str(refit)})
    assert status == 200 and body["model_version"] != first
    deadline = time.monotonic() + 60
    version = first
    while version != body["model_version"] and time.monotonic() < deadline:
        version = top(b, "reader")["model_version"]
        time.sleep(0.1)
    assert version == body["model_version"]


def test_sigkill_of_one_replica_while_clients_write_to_both_loses_and_doubles_nothing(replicas, pg_url):  # noqa: F811
    a, b = replicas
    writers = Writers([a.port, b.port])
    writers.wait_for(12)
    a.kill()  # mid-stream: its writers are still posting
    time.sleep(0.5)  # b's writers go on
    writers.stop()
    assert len(writers.acked) >= 12 and any(e["user"] == "writer1" for batch in writers.acked for e in batch)
    # the clients of the dead replica retry through the live one: each event lands once
    writers.check_stored(pg_url, b.port)
    assert top(b, "writer0")["k"] > 0  # the live replica serves what went through the dead one
