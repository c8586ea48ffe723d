"""A fixed-time Locust run against `thaw serve`, started here, with its summary printed.

Starts ``python -m thaw.serve MODEL`` (``--workers`` processes) on a free loopback port over
a fresh SQLite store, or over a throwaway PostgreSQL with --pg (thaw.serve.devdb), runs
``locust --headless`` with benchmarks/load/locustfile.py for --time, and prints per endpoint:
requests, failures, requests/s and p50/p95/p99 (Locust's own percentiles, in ms).

    python benchmarks/load/run.py [--model models/stack] [--users 32] [--time 60s] [--workers 2] [--pg]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from serve import start_server  # noqa: E402 - the latency benchmark's server start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/stack"))
    parser.add_argument("--users", type=int, default=32, help="concurrent Locust users")
    parser.add_argument("--spawn-rate", type=int, default=8)
    parser.add_argument("--time", default="60s")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pg", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--locust-args", default="", help="more for the locustfile: '--items-prefix i ...'")
    args = parser.parse_args()
    if not (args.model / "model.json").is_file():
        raise SystemExit(f"no saved model at {args.model}: `make serve` or `thaw fit --dataset ml-100k --model "
                         "stack --out models/stack` first")
    work = Path(tempfile.mkdtemp(prefix="thaw-load-"))
    pg = None
    if args.pg:
        from thaw.serve.devdb import ThrowawayPostgres

        pg = ThrowawayPostgres()
        db = pg.start()
    else:
        db = f"sqlite:///{work / 'load.db'}"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; store {'PostgreSQL (throwaway)' if pg else 'SQLite'}; "
          f"{args.workers} worker(s); {args.users} Locust users for {args.time}")
    server, port = start_server(args.model, db, args.workers, "")
    try:
        subprocess.run([sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
                        "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.time, "--host",
                        f"http://127.0.0.1:{port}", "--csv", str(work / "locust"), "--only-summary",
                        "--load-seed", str(args.seed), "--loglevel", "WARNING", *args.locust_args.split()],
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    finally:
        server.terminate()
        server.wait(timeout=60)
        if pg is not None:
            pg.stop()
    with open(work / "locust_stats.csv") as handle:
        rows = list(csv.DictReader(handle))
    print(f"\n{'endpoint':44s} {'requests':>8s} {'failures':>8s} {'req/s':>7s} {'p50':>6s} {'p95':>6s} {'p99':>6s} ms")
    for r in rows:
        name = r["Name"] if r["Name"] == "Aggregated" else f"{r['Type']} {r['Name']}"
        print(f"{name:44s} {r['Request Count']:>8s} {r['Failure Count']:>8s} {float(r['Requests/s']):7.1f} "
              f"{r['50%']:>6s} {r['95%']:>6s} {r['99%']:>6s}")


if __name__ == "__main__":
    main()
