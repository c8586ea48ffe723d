"""Latency of `thaw serve` for a brand-new user, and events ingested per second.

For each support size K, N fresh users each post K events (not timed), then ask once for
their top 10 (timed; a fresh user is always a cache miss, so every request adapts the model
to the user's history). Timed twice: in process (the service without HTTP: the store's reads
plus the model) and over HTTP against `python -m thaw.serve` on 127.0.0.1 with one client on
a keep-alive connection, then at K = 3 with 1, 8 and 32 concurrent clients on 1 and 2 uvicorn
workers (recommendations/s: every request a fresh user's cache miss). Then events/s:
batches of 100 posted over HTTP, each acknowledged after its commit (SQLite WAL, synchronous
FULL); benchmarks/serve_ingest.py times the store alone on SQLite and PostgreSQL.

Uses the saved ML-100k stack given by --model (default models/stack, made by `make serve`)
or, when there is none, fits a small stack on synthetic data. Loopback only; bounded by
--requests and --events.

    python benchmarks/serve.py [--model models/stack] [--requests 200] [--events 20000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

KS = (0, 1, 3, 10)


def fit_synthetic(folder: Path) -> Path:
    from thaw.data.splits import make_split
    from thaw.data.synthetic import make_synthetic
    from thaw.eval.protocol import SplitValidator
    from thaw.persist import save
    from thaw.registry import make_model
    from thaw.stack import Stack

    data = make_synthetic(n_users=300, n_items=200, seed=1)
    split = make_split(data, "new-user", test_frac=0.0, val_frac=0.2, seed=0)
    stack = Stack(members=[make_model(m, seed=0) for m in ("pop", "segment-pop", "content", "mf")],
                  validation_ks=(0, 1, 2, 3, 5, 10), min_users=5, seed=0)
    stack.set_task("next-item")
    stack.fit(split.train, validate=SplitValidator(split, "next-item"))
    stack.dataset = split.train
    return save(stack, folder)


def open_service(model_arg: Path, name: str) -> tuple:
    """One thread; the saved model at ``model_arg`` (or a small synthetic stack) served from a
    fresh SQLite store in a temporary folder: (service, store, model folder, store URL)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from thaw.serve.service import Service
    from thaw.serve.store import Store

    work = Path(tempfile.mkdtemp(prefix=f"thaw-serve-{name}-"))
    model = model_arg if (model_arg / "model.json").is_file() else None
    if model is None:
        print(f"no saved model at {model_arg}: fitting a small stack on synthetic data")
        model = fit_synthetic(work / "stack")
    db = f"sqlite:///{work / f'{name}.db'}"
    store = Store(db)
    store.init()
    service = Service(model, store, cache_size=0)
    service.seed_store()
    print(f"model {model} ({service.version}, {service.n_model_items} items); store {db}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, one thread per process")
    return service, store, model, db


def percentiles(seconds: list[float]) -> str:
    ms = np.asarray(seconds) * 1000
    return f"p50 {np.percentile(ms, 50):7.2f}  p95 {np.percentile(ms, 95):7.2f}  p99 {np.percentile(ms, 99):7.2f} ms"


def history_batches(service, k: int, n: int, tag: str, rng: np.random.Generator) -> list[list[dict]]:
    items = service.item_ids[:service.n_model_items]
    out = []
    for r in range(n):
        picked = rng.choice(len(items), size=k, replace=False) if k else []
        out.append([{"event_id": f"{tag}-{k}-{r}-{j}", "user": f"{tag}-{k}-{r}", "item": items[i], "rating": 4.0,
                     "kind": "rating", "ts": j} for j, i in enumerate(picked)])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(conn: http.client.HTTPConnection, method: str, path: str, body: object = None) -> dict:
    """One call; a connection the server closed while idle (keep-alive timeout) is opened
    again and the call retried (safe for events too: they are idempotent on event_id)."""
    payload = None if body is None else json.dumps(body)
    for attempt in (0, 1):
        try:
            conn.request(method, path, body=payload, headers={"content-type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            break
        except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest):
            conn.close()
            if attempt:
                raise
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {data[:200]!r}")
    return json.loads(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/stack"))
    parser.add_argument("--requests", type=int, default=200, help="fresh users per K")
    parser.add_argument("--events", type=int, default=20_000, help="events posted for the ingest rate")
    parser.add_argument("--clients", default="1,8,32", help="concurrent HTTP clients for the K = 3 run")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker processes, one server each")
    parser.add_argument("--server-args", default="", help="more options for thaw serve, e.g. '--loop asyncio'")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    service, store, model, db = open_service(args.model, "bench")
    rng = np.random.default_rng(args.seed)

    print(f"\nin process (no HTTP), top 10 for a fresh user, {args.requests} users per K")
    for k in KS:
        batches = history_batches(service, k, args.requests, "inproc", rng)
        times, routes = [], set()
        for batch in batches:
            if batch:
                service.add_events(batch)
            user = batch[0]["user"] if batch else f"inproc-{k}-{len(times)}"
            started = time.perf_counter()
            answer = service.recommend(user, 10).answer
            times.append(time.perf_counter() - started)
            routes.add(f"{answer.route['kind']}: {' + '.join(answer.route['members'])}")
        print(f"  K = {k:2d}  {percentiles(times)}   route {', '.join(sorted(routes))}")
    store.close()

    for workers in [int(w) for w in args.workers.split(",")]:
        server, port = start_server(model, db, workers, args.server_args)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            warm = history_batches(service, 3, 20 * workers, f"warm{workers}", rng)  # each worker's first requests
            for batch in warm:
                request(conn, "POST", "/v1/events", {"events": batch})
            concurrent_gets(port, [f"/v1/users/{b[0]['user']}/recommendations?n=10" for b in warm], 2 * workers)
            if workers == 1:
                print(f"\nover HTTP (uvicorn, 1 worker, 1 client, keep-alive), {args.requests} users per K")
                for k in KS:
                    times = []
                    for batch in history_batches(service, k, args.requests, "http", rng):
                        user = batch[0]["user"] if batch else f"http-{k}-{len(times)}"
                        if batch:
                            request(conn, "POST", "/v1/events", {"events": batch})
                        started = time.perf_counter()
                        request(conn, "GET", f"/v1/users/{user}/recommendations?n=10")
                        times.append(time.perf_counter() - started)
                    print(f"  K = {k:2d}  {percentiles(times)}")
            print(f"\nK = 3 fresh users over HTTP, uvicorn with {workers} worker(s), concurrent keep-alive clients")
            for clients in [int(c) for c in args.clients.split(",") if c.strip()]:
                batches = history_batches(service, 3, max(args.requests, 10 * clients), f"c{workers}-{clients}", rng)
                for batch in batches:
                    request(conn, "POST", "/v1/events", {"events": batch})
                times, wall = concurrent_gets(port, [f"/v1/users/{b[0]['user']}/recommendations?n=10" for b in batches],
                                              clients)
                print(f"  {workers} worker(s), {clients:2d} clients  {percentiles(times)}   "
                      f"{len(times) / wall:6.1f} recommendations/s")
            if workers == 1:
                ingest_over_http(conn, service, args.events)
            conn.close()
        finally:
            server.terminate()
            server.wait(timeout=30)


def start_server(model: Path, db: str, workers: int, extra: str) -> tuple[subprocess.Popen, int]:
    """``python -m thaw.serve`` on a free loopback port, once it answers /readyz."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "thaw.serve", str(model), "--db", db, "--port", str(port),
                               "--workers", str(workers), *extra.split()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    ready = 0
    while ready < 3 * workers:  # several answers, so that every worker has loaded its model
        try:
            request(http.client.HTTPConnection("127.0.0.1", port, timeout=30), "GET", "/readyz")
            ready += 1
        except (ConnectionError, OSError, RuntimeError):
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("the server did not start") from None
            time.sleep(0.3)
    time.sleep(2.0 if workers > 1 else 0.0)
    return server, port


def concurrent_gets(port: int, paths: list[str], clients: int) -> tuple[list[float], float]:
    """GET every path, ``clients`` keep-alive connections at once; each request's seconds and
    the wall time of them all."""
    times, lock = [], threading.Lock()

    def client(part: list[str]) -> None:
        mine = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for path in part:
            started = time.perf_counter()
            request(mine, "GET", path)
            with lock:
                times.append(time.perf_counter() - started)
        mine.close()

    threads = [threading.Thread(target=client, args=(paths[c::clients],)) for c in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, time.perf_counter() - started


def ingest_over_http(conn: http.client.HTTPConnection, service: object, events: int) -> None:
    items = service.item_ids[:service.n_model_items]  # type: ignore[attr-defined]
    n_batches = max(1, events // 100)
    started = time.perf_counter()
    for b in range(n_batches):
        batch = [{"event_id": f"ingest-{b}-{j}", "user": f"ingest-{b % 500}", "item": items[(b * 100 + j) % len(items)],
                  "kind": "click", "ts": b} for j in range(100)]
        request(conn, "POST", "/v1/events", {"events": batch})
    elapsed = time.perf_counter() - started
    print(f"\ningest over HTTP: {n_batches * 100} events in batches of 100, one client: "
          f"{n_batches * 100 / elapsed:,.0f} events/s acknowledged (SQLite WAL, synchronous FULL)")

if __name__ == "__main__":
    main()
