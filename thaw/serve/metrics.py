"""Prometheus text exposition without a client library: counters and latency histograms.

Per process: with ``--workers N`` each worker counts its own requests (a scrape reaches one of
them), as a multi-process Prometheus client would without its shared-directory mode.
"""

from __future__ import annotations

import threading
from collections import defaultdict
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
}


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, tuple], float] = defaultdict(float)
        self.histograms: dict[tuple[str, tuple], list[float]] = {}

    def count(self, name: str, value: float = 1.0, **labels: Any) -> None:
        with self.lock:
            self.counters[name, tuple(sorted(labels.items()))] += value

    def observe(self, name: str, seconds: float, **labels: Any) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            h = self.histograms.setdefault(key, [0.0] * (len(BUCKETS) + 2))  # buckets, +Inf, sum
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    h[i] += 1
            h[len(BUCKETS)] += 1
            h[-1] += seconds

    def get(self, name: str, **labels: Any) -> float:
        return self.counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self) -> str:
        """The exposition text: every declared metric, counters at 0 before their first event."""
        with self.lock:
            counters = dict(self.counters)
            histograms = {k: list(v) for k, v in self.histograms.items()}
        lines = []
        for name, (kind, text) in HELP.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
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


def _labels(labels: tuple) -> str:
    if not labels:
        return ""
    body = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)
