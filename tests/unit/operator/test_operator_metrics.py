"""metrics: the operator's /metrics (jobs by phase, reconcile duration, errors), scraped over HTTP."""

from __future__ import annotations

import socket
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from finetune_operator.metrics import OperatorMetrics


def test_jobs_by_phase_and_reconcile_metrics_are_served():
    phases = {"a": "Running", "b": "Running", "c": "Failed"}
    m = OperatorMetrics(lambda: phases.values())
    m.reconcile_seconds.labels("status").observe(0.02)
    m.reconcile_errors.labels("create", "ReconcileError").inc()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m.serve(port, addr="127.0.0.1")
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("finetune_operator_jobs", (("phase", "Running"),))] == 2
    assert samples[("finetune_operator_jobs", (("phase", "Succeeded"),))] == 0
    assert samples[("finetune_operator_reconcile_errors_total", (("action", "create"), ("reason", "ReconcileError")))] == 1
    assert samples[("finetune_operator_reconcile_duration_seconds_count", (("action", "status"),))] == 1
