"""How long the command line takes to answer when it has nothing to compute.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 10]

Runs ``thaw --help``, ``thaw models`` and ``thaw evaluate --help`` as a user would (the
installed entry point, a fresh process each time) and prints the median and the slowest wall
time, the median CPU time (user + system, which other work on the machine inflates less), and
the load average, since on a shared machine the wall time says as much about the neighbours.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = (["--help"], ["models"], ["evaluate", "--help"])


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    thaw = str(Path(sys.executable).with_name("thaw"))
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; "
          f"{args.repeats} runs each (after one to warm the file cache)")
    print(f"{'command':24s} {'median wall':>12s} {'slowest':>9s} {'median CPU':>11s}")
    for extra in COMMANDS:
        command = [thaw, *extra]
        timed(command)
        runs = [timed(command) for _ in range(args.repeats)]
        walls, cpus = [w for w, _ in runs], [c for _, c in runs]
        print(f"{'thaw ' + ' '.join(extra):24s} {statistics.median(walls):11.2f}s {max(walls):8.2f}s "
              f"{statistics.median(cpus):10.2f}s")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
