"""Where one recommendation's time goes: a K = 3 request to the service, profiled.

Fresh users each post K events (not timed), then ask once for their top 10 through
``Service.recommend`` (the store's reads, the catalogue check, the model over the whole
catalogue, the top 10; no HTTP), each a cache miss. Prints the wall time per request, then
each stack member's own ``score`` time on the same requests (what the stack asks of it), then
cProfile's functions by cumulative time over all the requests.

``--compare REV`` times the same requests side by side instead: the thaw package of git
revision REV (extracted to a temporary folder) against this checkout's, each in a process of
its own, alternating for ``--rounds`` rounds on the same users, so both see the same load on a
shared machine; it prints both per-request times and checks that both give the same top 10.

    python benchmarks/serve_profile.py [--model models/stack] [--k 3] [--requests 100] [--top 30]
    python benchmarks/serve_profile.py --compare main [--rounds 3] [--k 0,3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import history_batches, open_service, percentiles  # noqa: E402 - the latency benchmark's helpers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/stack"))
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--top", type=int, default=30, help="functions listed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", metavar="REV", help="time git revision REV's thaw against this one's")
    parser.add_argument("--rounds", type=int, default=3, help="--compare: alternating rounds")
    parser.add_argument("--ks", default="3", help="--compare: support sizes, comma-separated")
    parser.add_argument("--times-only", action="store_true", help=argparse.SUPPRESS)  # one --compare run
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    from thaw.models.base import Context

    service, store, users, times = timed_requests(args.model, args.k, args.requests, args.seed)
    if args.times_only:
        tops = [[item for item, _ in service.recommend(user, 10).items] for user in users]
        print(json.dumps({"times": times, "tops": tops}))
        store.close()
        return
    route = service.recommend(users[0], 10).answer.route
    print(f"\nK = {args.k}, {len(users)} requests (Service.recommend, cache off): {percentiles(times)}")
    print(f"route: {route['kind']} {route['members']} weights {[round(w, 3) for w in route['weights']]}")

    members = getattr(service.model, "members", {})
    if members:
        first = Context(None, service._history(users[0], store.history(users[0]))[0])
        needed = service.model.needed("next-item", first)
        print(f"members the stack asks at K = {args.k}: {', '.join(needed)}")
        items = np.arange(service.n_model_items)
        for name in needed:
            member, spent = members[name], []
            for user in users[:50]:
                ctx = Context(None, service._history(user, store.history(user))[0], dict(store.user(user)["profile"]))
                started = time.perf_counter()
                member.score(ctx, items)
                spent.append(time.perf_counter() - started)
            print(f"  {name:14s} score over {len(items)} items: {percentiles(spent)}")

    profiler = cProfile.Profile()
    profiler.enable()
    for user in users:
        service.recommend(user, 10)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(args.top)
    print("\ncProfile over the same requests (cumulative):")
    print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:20000])
    store.close()


def timed_requests(model: Path, k: int, n: int, seed: int) -> tuple:
    """Fresh users with ``k`` events each (posted untimed), after 20 warm-up users; each one's
    first ``Service.recommend`` timed: (service, store, users, seconds per request)."""
    service, store, _, _ = open_service(model, "profile")
    rng = np.random.default_rng(seed)
    warm = history_batches(service, k, 20, "warm", rng)
    batches = history_batches(service, k, n, "prof", rng)
    for batch in warm + batches:
        if batch:
            service.add_events(batch)
    users = [b[0]["user"] if b else f"prof-{i}" for i, b in enumerate(batches)]
    for user in [b[0]["user"] if b else f"warm-{i}" for i, b in enumerate(warm)]:
        service.recommend(user, 10)  # first calls: lazy loads, caches that every request would find

    times = []
    for user in users:
        started = time.perf_counter()
        service.recommend(user, 10)
        times.append(time.perf_counter() - started)
    return service, store, users, times


def compare(args: argparse.Namespace) -> None:
    """REV's thaw and this checkout's, each timing the same requests in a process of its own,
    taking turns round by round; per K, both sets of percentiles and whether the answers match."""
    here = Path(__file__).resolve().parent
    root = here.parent
    with tempfile.TemporaryDirectory(prefix="thaw-compare-") as folder:
        archive = subprocess.run(["git", "-C", str(root), "archive", "--format=tar", args.compare, "thaw"],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        trees = {args.compare: folder, "this checkout": str(root)}
        print(f"model {args.model}; {args.requests} fresh users per K and round, {args.rounds} rounds, "
              f"each side in its own process, taking turns")
        for k in (int(x) for x in args.ks.split(",")):
            times: dict[str, list[float]] = {name: [] for name in trees}
            tops: dict[str, list] = {name: [] for name in trees}
            for r in range(args.rounds):
                for name, tree in trees.items():
                    command = [sys.executable, str(here / "serve_profile.py"), "--times-only", "--model",
                               str(args.model), "--k", str(k), "--requests", str(args.requests),
                               "--seed", str(args.seed + r)]
                    env = {**os.environ, "PYTHONPATH": tree}
                    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
                    result = json.loads(out.strip().splitlines()[-1])
                    times[name] += result["times"]
                    tops[name] += result["tops"]
            same = sum(a == b for a, b in zip(*tops.values(), strict=True))
            for name in trees:
                print(f"K = {k:2d}  {name:>14s}: {percentiles(times[name])}")
            before, after = (np.median(t) for t in times.values())
            print(f"K = {k:2d}  median ratio {before / after:.2f}x; the same top 10 for {same} of "
                  f"{len(tops[args.compare])} requests")


if __name__ == "__main__":
    main()
