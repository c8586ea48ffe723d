"""Where one recommendation's time goes: a K = 3 request to the service, profiled.

Fresh users each post K events (not timed), then ask once for their top 10 through
``Service.recommend`` (the store's reads, the catalogue check, the model over the whole
catalogue, the top 10; no HTTP), each a cache miss. Prints the wall time per request, then
each stack member's own ``score`` time on the same requests (what the stack asks of it), then
cProfile's functions by cumulative time over all the requests.

    python benchmarks/serve_profile.py [--model models/stack] [--k 3] [--requests 100] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
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
    args = parser.parse_args()
    from thaw.models.base import Context

    service, store, _, _ = open_service(args.model, "profile")
    rng = np.random.default_rng(args.seed)
    warm = history_batches(service, args.k, 20, "warm", rng)
    batches = history_batches(service, args.k, args.requests, "prof", rng)
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


if __name__ == "__main__":
    main()
