"""The evaluation's progress bar: which jobs run now, for how long, and the ETA."""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping

from tqdm.auto import tqdm


class Progress:
    """A bar over the models that names those running now (with how long each has run) and,
    when every remaining model has an expected time, the ETA. ``jobs`` workers take the
    models in order, so the running ones are the first ``jobs`` unfinished."""

    def __init__(self, names: list[str], jobs: int, expected: Mapping[str, float], desc: str,
                 enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.names, self.jobs, self.expected, self.clock = names, jobs, dict(expected), clock
        self.start: dict[str, float] = {}
        self.done: set[str] = set()
        self.bar = tqdm(total=len(names), desc=desc, disable=not enabled, leave=False, unit="model",
                        bar_format="{desc}: {n_fmt}/{total_fmt} models [{elapsed}{postfix}]")

    def started(self, name: str) -> None:
        self.start.setdefault(name, self.clock())
        self.refresh()

    def finished(self, name: str) -> None:
        self.done.add(name)
        waiting = [n for n in self.names if n not in self.done and n not in self.start]
        if waiting and len(self.running()) < self.jobs:
            self.start[waiting[0]] = self.clock()
        self.bar.set_postfix_str(self.text(), refresh=False)
        self.bar.update(1)

    def running(self) -> list[str]:
        return [n for n in self.names if n in self.start and n not in self.done]

    def eta(self) -> float | None:
        """Seconds until the last model is done if each takes its expected time: the running
        ones finish their remainder, then the waiting ones go in order to the first free worker."""
        left = [n for n in self.names if n not in self.done]
        if not left or any(n not in self.expected for n in left):
            return None
        now = self.clock()
        free = [max(0.0, self.expected[n] - (now - self.start[n])) for n in self.running()]
        free += [0.0] * (self.jobs - len(free))
        heapq.heapify(free)
        for name in left:
            if name not in self.start:
                heapq.heappush(free, heapq.heappop(free) + self.expected[name])
        return max(free, default=0.0)

    def text(self) -> str:
        now = self.clock()
        running = ", ".join(f"{n} {_clock(now - self.start[n])}" for n in self.running())
        eta = self.eta()
        return "; ".join(part for part in (f"running {running}" if running else "",
                                           "" if eta is None else f"ETA {_clock(eta)}") if part)

    def refresh(self) -> None:
        self.bar.set_postfix_str(self.text(), refresh=True)

    def close(self) -> None:
        self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
