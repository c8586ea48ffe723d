"""thaw serve over real HTTP (uvicorn in a subprocess on 127.0.0.1): nothing acknowledged is
lost when the server is killed with SIGKILL mid-stream, on SQLite and on a real PostgreSQL
server that this file starts itself (skipped only where no PostgreSQL is installed; .ci/run
installs it)."""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from thaw.serve.store import SCHEMA_VERSION, Store

WRITERS = 4
BATCH = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(port, method, path, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class Server:
    """`python -m thaw.serve` as a subprocess on a free loopback port."""

    def __init__(self, model_dir, db, log, workers=1):
        self.model_dir, self.db, self.log, self.workers = model_dir, db, log, workers
        self.port = free_port()
        self.proc = None

    def start(self, timeout=120):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "thaw.serve", str(self.model_dir), "--db", self.db,
                                      "--host", "127.0.0.1", "--port", str(self.port),
                                      "--workers", str(self.workers)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if call(self.port, "GET", "/readyz", timeout=2)[0] == 200:
                    return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not become ready")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture()
def server_log(tmp_path):
    with open(tmp_path / "server.log", "w") as log:
        yield log


class Writers:
    """Threads that post batches of BATCH events, writer w to ``ports[w % len(ports)]``, until
    stopped or a call goes unanswered; each batch lands in ``acked`` (200) or ``unacked``."""

    def __init__(self, ports, n=WRITERS):
        self.ports, self.stop_flag, self.lock = ports, threading.Event(), threading.Lock()
        self.acked, self.unacked, self.refused = [], [], []
        self.threads = [threading.Thread(target=self.write, args=(w,)) for w in range(n)]
        for t in self.threads:
            t.start()

    def write(self, w):
        n = 0
        while not self.stop_flag.is_set():
            batch = [{"event_id": f"w{w}-{n + k}", "user": f"writer{w}", "item": f"i{(n + k) % 60}",
                      "kind": "click", "ts": n + k} for k in range(BATCH)]
            n += BATCH
            try:
                status, _ = call(self.ports[w % len(self.ports)], "POST", "/v1/events", {"events": batch}, timeout=10)
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError):
                status = None  # no answer, or one cut short by the kill: not acknowledged
            with self.lock:
                (self.acked if status == 200 else self.unacked).append(batch)
                if status not in (200, None):
                    self.refused.append(status)
            if status is None:
                return

    def wait_for(self, batches, timeout=60):
        """Until ``batches`` batches are acknowledged (or the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.acked) < batches:
            time.sleep(0.01)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not self.refused, f"the server refused batches: {self.refused[:5]}"

    def check_stored(self, db, retry_port):
        """Every acknowledged event stored once; the unacknowledged batches and an
        acknowledged one posted again (as a client retries) through ``retry_port`` land once."""
        stored = [e["event_id"] for e in Store(db).all_events()]
        assert len(stored) == len(set(stored))
        missing = {e["event_id"] for batch in self.acked for e in batch} - set(stored)
        assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
        for batch in [*self.unacked, self.acked[0]]:
            assert call(retry_port, "POST", "/v1/events", {"events": batch})[0] == 200
        stored = [e["event_id"] for e in Store(db).all_events()]
        expected = {e["event_id"] for batch in [*self.acked, *self.unacked] for e in batch}
        assert len(stored) == len(set(stored)) and set(stored) == expected
        return expected


def check_durability(model_dir, db, log):
    """Writers post batches while the server is killed with SIGKILL; after a restart every
    acknowledged event is stored exactly once, and retrying the unacknowledged ones (as a
    client would) stores each of them once too."""
    server = Server(model_dir, db, log).start()
    writers = Writers([server.port])
    writers.wait_for(10)
    server.kill()  # mid-stream: writers are still posting
    writers.stop()
    assert len(writers.acked) >= 10, "the writers got too few acknowledgements before the kill"
    print(f"acknowledged batches {len(writers.acked)}, in flight at the kill {len(writers.unacked)}")

    server = Server(model_dir, db, log).start()
    try:
        expected = writers.check_stored(db, server.port)
        status, history = call(server.port, "GET", "/v1/users/writer0/history")
        assert status == 200 and len(history["events"]) == len({i for i in expected if i.startswith("w0-")})
    finally:
        server.stop()


def test_acknowledged_events_survive_sigkill_on_sqlite(tiny_stack, tmp_path, server_log):
    check_durability(tiny_stack, f"sqlite:///{tmp_path / 'thaw.db'}", server_log)


def test_recommendations_over_http_follow_the_users_events(tiny_stack, tmp_path, server_log):
    server = Server(tiny_stack, f"sqlite:///{tmp_path / 'thaw.db'}", server_log).start()
    try:
        status, cold = call(server.port, "GET", "/v1/users/fresh/recommendations?n=5")
        assert status == 200 and cold["k"] == 0
        batch = [{"event_id": f"f{k}", "user": "fresh", "item": item, "rating": 5, "kind": "rating", "ts": k}
                 for k, item in enumerate(["i3", "i33", "i35"])]
        assert call(server.port, "POST", "/v1/events", {"events": batch}) == (
            200, {"stored": 3, "duplicates": [], "created_users": ["fresh"], "created_items": []})
        status, warm = call(server.port, "GET", "/v1/users/fresh/recommendations?n=5")
        assert status == 200 and warm["k"] == 3 and not warm["cached"]
        assert warm["items"] != cold["items"] and not {"i3", "i33", "i35"} & {x["item"] for x in warm["items"]}
        status, text = 0, ""
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            status, text = response.status, response.read().decode()
        assert status == 200 and "thaw_events_stored_total 3" in text
        # SIGHUP reloads the model folder; the server keeps answering meanwhile
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while "thaw_reloads_total 1" not in text and time.monotonic() < deadline:
            assert call(server.port, "GET", "/v1/users/fresh/recommendations?n=5")[0] == 200
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
                text = response.read().decode()
        assert "thaw_reloads_total 1" in text
        assert call(server.port, "GET", "/v1/users/fresh/recommendations?n=5")[1]["items"] == warm["items"]
    finally:
        server.stop()


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_two_workers_answer_a_scrape_with_both_workers_counts(tiny_stack, tmp_path, server_log):
    server = Server(tiny_stack, f"sqlite:///{tmp_path / 'thaw.db'}", server_log, workers=2).start()
    try:
        deadline = time.monotonic() + 60  # the second worker may still be loading the model
        while "thaw_metrics_workers 2" not in scrape(server.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "thaw_metrics_workers 2" in scrape(server.port)
        for n in range(10):  # new connections each: the kernel hands them to either worker
            batch = [{"event_id": f"m{n}-{k}", "user": f"metered{n}", "item": f"i{k}", "kind": "click", "ts": k}
                     for k in range(3)]
            assert call(server.port, "POST", "/v1/events", {"events": batch})[0] == 200
        deadline = time.monotonic() + 10
        while "thaw_events_stored_total 30" not in scrape(server.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        text = scrape(server.port)
        assert "thaw_events_stored_total 30" in text
        assert 'thaw_requests_total{method="POST",route="/v1/events",status="200"} 10' in text
    finally:
        server.stop()


# --- PostgreSQL ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL server on loopback (thaw.serve.devdb)."""
    from thaw.serve.devdb import ThrowawayPostgres, pg_bin

    if pg_bin() is None:
        pytest.skip("no PostgreSQL server installed (.ci/run installs Debian's postgresql)")
    with ThrowawayPostgres() as url:
        yield url


@pytest.fixture()
def pg_url(postgres):
    """The server with an empty thaw schema for each test."""
    from sqlalchemy import create_engine

    from thaw.serve.store import metadata

    engine = create_engine(postgres)
    with engine.begin() as conn:
        metadata.drop_all(conn)
    engine.dispose()
    return postgres


def test_acknowledged_events_survive_sigkill_on_postgresql(tiny_stack, pg_url, server_log):
    check_durability(tiny_stack, pg_url, server_log)


def test_postgresql_store_has_the_same_schema_and_semantics(pg_url):
    from test_serve import events

    store = Store(pg_url)
    assert store.init() == 0 and store.init() == SCHEMA_VERSION
    store.put_item("a", {"title": "A", "genres": ["Drama"]}, "")
    first = store.add_events(events("u", ["a", "a"])["events"])
    again = store.add_events(events("u", ["a", "a"])["events"])
    assert len(first.stored) == 2 and first.created_users == ["u"] and again.duplicates == ["u-0", "u-1"]
    from thaw.serve.store import UnknownItems

    with pytest.raises(UnknownItems):
        store.add_events(events("v", ["a", "b"])["events"])
    assert store.user("v") is None and store.count_events() == 2
    assert store.add_events(events("v", ["a", "b"])["events"], create_items=True).created_items == ["b"]
    row, history, revs = store.snapshot("u")
    assert [e["event_id"] for e in history] == ["u-0", "u-1"] and revs == {"catalogue": 2, "evidence": 0, "model": 0}
    store.close()


def test_two_stores_racing_on_postgresql_store_each_event_once(pg_url):
    """Two processes' stores (replicas) post overlapping batches at once: every event_id is
    stored once, reported stored by exactly one of them and a duplicate by the other, and
    each new user is reported created once."""
    stores = [Store(pg_url) for _ in range(2)]
    stores[0].init()
    stores[0].seed([], [(f"i{k}", {}, "") for k in range(30)])
    batches = [[{"event_id": f"e{b}-{j}", "user": f"u{b % 7}", "item": f"i{(b + j) % 30}", "rating": None if j % 2
                 else 4.0, "kind": "click", "ts": j} for j in range(25)] for b in range(40)]
    results: list[list] = [[], []]

    def post(k):
        for batch in batches:
            results[k].append(stores[k].add_events(batch))

    threads = [threading.Thread(target=post, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = [e["event_id"] for e in stores[0].all_events()]
    expected = [e["event_id"] for batch in batches for e in batch]
    assert sorted(stored) == sorted(expected)
    reported = [i for r in results for w in r for i in w.stored]
    assert sorted(reported) == sorted(expected)
    assert sorted(i for r in results for w in r for i in w.duplicates) == sorted(expected)
    assert sorted(u for r in results for w in r for u in w.created_users) == [f"u{k}" for k in range(7)]
    ratings = {e["event_id"]: e["rating"] for e in stores[1].all_events()}
    assert ratings["e0-1"] is None and ratings["e0-0"] == 4.0
    for store in stores:
        store.close()
