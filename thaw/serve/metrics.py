"""Prometheus text exposition without a client library: counters and latency histograms.

With ``--workers N`` a scrape reaches one worker, so the workers share a folder (``shared``):
each writes its own totals there at most once a second, and each answers a scrape with the sum
over every worker's file, its own taken live (as a multi-process Prometheus client does in its
shared-directory mode). A worker that exits leaves its file, so counters never run backwards.
Replicas on other machines are scraped one by one, as any Prometheus target is.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HELP = {
    "thaw_requests_total": ("counter", "HTTP requests by route template, method and status."),
    "thaw_request_seconds": ("histogram", "HTTP request latency by route template and method."),
    "thaw_model_seconds": ("histogram", "Time the model took to score the catalogue for one user state."),
    "thaw_events_stored_total": ("counter", "Events stored (each event_id once)."),
    "thaw_events_duplicate_total": ("counter", "Events received again with an event_id already stored."),
    "thaw_breaker_trips_total": ("counter", "Requests the stack's circuit breaker sent to the fallback."),
    "thaw_explored_slates_total": ("counter", "Slates whose first slots the exploration policy chose."),
    "thaw_feedback_total": ("counter", "Rewards recorded for explored slots."),
    "thaw_reloads_total": ("counter", "Models loaded by POST /v1/admin/reload or SIGHUP."),
    "thaw_cache_hits_total": ("counter", "Recommendations answered from the per-user or the K = 0 per-profile cache."),
    "thaw_cache_misses_total": ("counter", "Recommendations the model computed."),
    "thaw_metrics_workers": ("gauge", "Worker processes whose totals this scrape sums (1 without --workers)."),
}


FLUSH_SECONDS = 1.0
"""How stale another worker's figures in a scrape may be."""


class Metrics:
    def __init__(self, shared: str | Path | None = None, name: str | None = None) -> None:
        """``shared``: the folder the workers of one server write their totals to; ``name``:
        this worker's file in it (its process id by default)."""
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self.histograms: dict[tuple[str, tuple], list[float]] = {}
        self.shared = None if shared is None else Path(shared)
        self.file = None if self.shared is None else self.shared / f"{name or os.getpid()}.json"
        self._dirty, self._writing = threading.Event(), threading.Lock()
        if self.shared is not None:
            self._dirty.set()  # an empty file at once: a scrape counts this worker from its start
            threading.Thread(target=self._flush_now_and_then, name="thaw-metrics", daemon=True).start()

    def count(self, name: str, value: float = 1.0, **labels: Any) -> None:
        with self.lock:
            self.counters[name, tuple(sorted(labels.items()))] += value
        self._dirty.set()

    def observe(self, name: str, seconds: float, **labels: Any) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            h = self.histograms.setdefault(key, [0.0] * (len(BUCKETS) + 2))  # buckets, +Inf, sum
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    h[i] += 1
            h[len(BUCKETS)] += 1
            h[-1] += seconds
        self._dirty.set()

    def get(self, name: str, **labels: Any) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        """The exposition text: every declared metric, counters at 0 before their first event;
        summed over the workers that share a folder."""
        counters, histograms = self._snapshot()
        workers = 1
        if self.shared is not None:
            self.flush()
            for other in sorted(self.shared.glob("*.json")):
                if other == self.file:
                    continue
                try:
                    theirs = json.loads(other.read_text())
                except (OSError, ValueError):  # a file being replaced, or gone: skip it this time
                    continue
                workers += 1
                for name, labels, value in theirs["counters"]:
                    key = (name, tuple(tuple(pair) for pair in labels))
                    counters[key] = counters.get(key, 0.0) + value
                for name, labels, values in theirs["histograms"]:
                    key = (name, tuple(tuple(pair) for pair in labels))
                    mine = histograms.setdefault(key, [0.0] * len(values))
                    histograms[key] = [a + b for a, b in zip(mine, values, strict=True)]
        lines = []
        for name, (kind, text) in HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "gauge":
                lines.append(f"{name} {workers}")
                continue
            if kind == "counter":
                series = {k: v for k, v in counters.items() if k[0] == name} or {(name, ()): 0.0}
                lines += [f"{name}{_labels(labels)} {_number(v)}" for (_, labels), v in sorted(series.items())]
                continue
            for (_, labels), h in sorted((k, v) for k, v in histograms.items() if k[0] == name):
                for edge, n in zip((*BUCKETS, "+Inf"), h[:-1], strict=True):
                    lines.append(f"{name}_bucket{_labels((*labels, ('le', str(edge))))} {_number(n)}")
                lines.append(f"{name}_sum{_labels(labels)} {h[-1]!r}")
                lines.append(f"{name}_count{_labels(labels)} {_number(h[len(BUCKETS)])}")
        return "\n".join(lines) + "\n"


    def _snapshot(self) -> tuple[dict[tuple[str, tuple], float], dict[tuple[str, tuple], list[float]]]:
        with self.lock:
            return dict(self.counters), {k: list(v) for k, v in self.histograms.items()}

    def flush(self) -> None:
        """Write this worker's totals to its file in the shared folder (atomically)."""
        if self.file is None:
            return
        with self._writing:  # the scrape's thread and the flushing thread: one at a time
            self._dirty.clear()
            counters, histograms = self._snapshot()
            body = {"counters": [[n, list(map(list, labels)), v] for (n, labels), v in counters.items()],
                    "histograms": [[n, list(map(list, labels)), v] for (n, labels), v in histograms.items()]}
            partial = self.file.with_suffix(".part")
            partial.write_text(json.dumps(body))
            os.replace(partial, self.file)

    def _flush_now_and_then(self) -> None:
        while True:
            self._dirty.wait()
            try:
                self.flush()
            except OSError:  # the folder went away (the server is shutting down)
                return
            time.sleep(FLUSH_SECONDS)


def _labels(labels: tuple) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
