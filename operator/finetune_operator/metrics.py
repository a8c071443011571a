"""The operator's own Prometheus metrics: jobs by phase, phase transitions, reconcile duration and errors.

Why these three: "how many fine-tunes are running/failed right now", "is the operator keeping up" and "is it
failing" are the questions an on-call person asks first; the trainer's metrics (finetune_step, ...) answer
the rest. Jobs by phase is computed at scrape time from what the reconciler last wrote, so it never drifts
from status.
"""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from finetune_api.status import PHASES


class _PhaseCollector(Collector):
    def __init__(self, phases: Callable[[], Iterable[str]]):
        self._phases = phases

    def collect(self):
        counts = dict.fromkeys(PHASES, 0)
        for p in self._phases():
            if p in counts:
                counts[p] += 1
        g = GaugeMetricFamily("finetune_operator_jobs", "FineTuneJobs by phase, as last reconciled.",
                              labels=["phase"])
        for phase, n in counts.items():
            g.add_metric([phase], n)
        yield g


class OperatorMetrics:
    """The operator's registry; `serve(port)` exposes it at /metrics."""

    def __init__(self, phases: Callable[[], Iterable[str]]):
        self.registry = CollectorRegistry()
        self.registry.register(_PhaseCollector(phases))
        self.reconcile_seconds = Histogram(
            "finetune_operator_reconcile_duration_seconds", "Time to reconcile one FineTuneJob.", ["action"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.reconcile_errors = Counter(
            "finetune_operator_reconcile_errors", "Reconciles that failed, by action and reason.",
            ["action", "reason"], registry=self.registry)
        self.transitions = Counter(
            "finetune_operator_transitions", "FineTuneJob phase changes, by the phase left and the phase entered.",
            ["from_phase", "to_phase"], registry=self.registry)
        self.events = Counter("finetune_operator_events", "Events posted on FineTuneJobs, by reason.",
                              ["reason"], registry=self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve /metrics on `port` (0: do not serve)."""
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
