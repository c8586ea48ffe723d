"""Events a second the store acknowledges: SQLite and PostgreSQL, one and several writers.

Each batch is ``Store.add_events`` (one transaction, its commit flushed before it returns:
SQLite WAL with synchronous FULL; PostgreSQL with fsync and synchronous_commit on), so every
event counted here would survive a crash. Writers are threads, each with its own users;
every batch names 100 distinct items of a 1,682-item catalogue (ML-100k's size) and a second
pass re-posts a tenth of the batches to time duplicates (counted once, never stored twice:
checked at the end). PostgreSQL is a throwaway server this script starts (thaw.serve.devdb),
or the one named by --pg.

    python benchmarks/serve_ingest.py [--events 20000] [--batch 100] [--writers 1,4] [--pg URL]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

N_ITEMS = 1682


def run(url: str, events: int, batch: int, writers: int, tag: str) -> tuple[float, int]:
    """Events/s acknowledged with ``writers`` threads, and how many duplicates were refused."""
    from thaw.serve.store import Store

    store = Store(url)
    store.init()
    store.seed([], [(f"i{i}", {}, "") for i in range(N_ITEMS)])
    per_writer = max(1, events // batch // writers)

    def batches(w: int) -> list[list[dict]]:
        return [[{"event_id": f"{tag}-{w}-{b}-{j}", "user": f"{tag}-{w}-{b % 50}",
                  "item": f"i{(b * batch + j) % N_ITEMS}", "kind": "click", "ts": b}
                 for j in range(batch)] for b in range(per_writer)]

    work = [batches(w) for w in range(writers)]
    duplicates = [0] * writers

    def writer(w: int) -> None:
        for b in work[w]:
            store.add_events(b)
        for b in work[w][::10]:  # retried batches: every event a duplicate
            duplicates[w] += len(store.add_events(b).duplicates)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    total = writers * per_writer * batch
    retried = sum(len(w[::10]) for w in work) * batch
    stored = [e["event_id"] for e in store.all_events() if e["event_id"].startswith(f"{tag}-")]
    assert len(stored) == len(set(stored)) == total, "an event was lost or stored twice"
    assert sum(duplicates) == retried
    store.close()
    return (total + retried) / elapsed, sum(duplicates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="new events per run (then a tenth again)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--writers", default="1,4", help="writer threads, one run each")
    parser.add_argument("--pg", default=None, help="a PostgreSQL URL; default: a throwaway server")
    args = parser.parse_args()
    from thaw.serve.devdb import ThrowawayPostgres, pg_bin

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"Store.add_events in process (no HTTP), batches of {args.batch}, {args.events:,} new events "
          "plus a tenth of the batches again (duplicates)")
    server = None
    pg = args.pg
    if pg is None and pg_bin() is not None:
        server = ThrowawayPostgres()
        pg = server.start()
    work = Path(tempfile.mkdtemp(prefix="thaw-ingest-"))
    try:
        for writers in [int(w) for w in args.writers.split(",")]:
            stores = [("SQLite WAL, synchronous FULL", f"sqlite:///{work / f'ingest{writers}.db'}")]
            if pg is not None:
                stores.append(("PostgreSQL, fsync + synchronous_commit on", pg))
            for label, url in stores:
                rate, dups = run(url, args.events, args.batch, writers, f"w{writers}")
                print(f"  {writers} writer(s)  {label:44s} {rate:9,.0f} events/s acknowledged "
                      f"({dups:,} duplicates refused)")
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
