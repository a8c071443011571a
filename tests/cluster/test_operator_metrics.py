"""A real Prometheus scrapes the real operator while it runs FineTuneJobs on the real control plane: jobs by phase,
reconcile timings and the FineTuneJobFailed alert read what `kubectl get ftj` says, and the dashboard's operator
queries return data.
"""

from __future__ import annotations

import json
import re

import pytest

from finetune_monitoring.dashboard import DASHBOARD_FILE, panel_queries
from support.prometheus import running_prometheus
from pod_behaviour import fails, runs_long
from scenario import apply, ftj, install_crd, running_operator, wait_phase

METRIC = re.compile(r"\bfinetune_operator_[a-z_]+\b")


@pytest.fixture(scope="module")
def prometheus():
    with running_prometheus() as server:
        yield server


def test_prometheus_sees_the_operators_jobs_by_phase_and_the_failed_alert(control_plane, namespace, prometheus,
                                                                          monkeypatch):
    cp = control_plane
    install_crd(cp)
    node = "gpu-operator-metrics"
    cp.add_gpu_node(node, gpus=4)
    port = prometheus.free_port()
    prometheus.add_target("operator", f"127.0.0.1:{port}", component="operator")
    doc = {"outcome": "Failed", "reason": "DataError", "message": "/opt/data/train.jsonl:3: no messages key"}
    try:
        with running_operator(cp, env={"FINETUNE_OPERATOR_METRICS_PORT": str(port)}):
            assert apply(cp, runs_long().on(ftj("long", namespace, node=node))).returncode == 0
            # exit code 2: a data error, no retries
            assert apply(cp, fails(exit_code=2, message=json.dumps(doc)).on(ftj("broken", namespace, node=node))).returncode == 0
            wait_phase(cp, "long", namespace, "Running")
            wait_phase(cp, "broken", namespace, "Failed")

            def phases():
                got = {r["metric"]["phase"]: float(r["value"][1]) for r in prometheus.query("finetune_operator_jobs")}
                return got if got.get("Running", 0) >= 1 and got.get("Failed", 0) >= 1 else None

            prometheus.wait_for("finetune_operator_jobs to show a Running and a Failed job", phases, timeout=60)
            assert prometheus.query("sum(finetune_operator_reconcile_duration_seconds_count) > 0")
            prometheus.wait_for("the FineTuneJobFailed alert (pending or firing)",
                                lambda: prometheus.query('ALERTS{alertname="FineTuneJobFailed"}'), timeout=30)

            exported = {r for r in prometheus.api("label/__name__/values")["data"] if r.startswith("finetune_operator_")}
            dashboard = json.loads(DASHBOARD_FILE.read_text())
            for title, expr in panel_queries(dashboard):
                names = set(METRIC.findall(expr))
                if not names:
                    continue
                query = expr.replace("$__rate_interval", "1m")
                if names <= exported:  # the operator exports every metric the query names: a rate needs two
                    # scrapes of the series, which a loaded machine may not have made yet
                    prometheus.wait_for(f"{title}: {expr} to return something from the live operator",
                                        lambda: prometheus.query(query), timeout=30)
                else:
                    prometheus.query(query)  # status success
    finally:
        cp.kubectl("delete", "node", node, "--wait=false")
