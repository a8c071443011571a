"""A real Prometheus scrapes a real CPU `finetune run` (and the operator's metrics endpoint); what Grafana and
the alert rules would ask, we ask it over its HTTP API.

- The step advances across scrapes, and each scraped `finetune_train_loss` is the loss the trainer wrote to
  metrics.jsonl for the scraped `finetune_step`.
- Every query of the shipped dashboard and every alert expression is accepted by the server and names only
  metrics that exist; the dashboard's trainer queries return data (MFU and GPU memory only on CUDA runs).
- The shipped rules load and evaluate without errors, and a healthy run raises no alert.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_monitoring import alerts
from finetune_monitoring.dashboard import DASHBOARD_FILE, panel_queries
from finetune_operator.metrics import OperatorMetrics
from finetune_trainer.metrics import TrainerMetrics
from support.cli_runs import history, write_job

STEPS = 200
JOB = "quickstart"          # metadata.name of examples/quickstart/job.yaml
NAMESPACE = "local"         # what `finetune run` reports for a job without a namespace
CUDA_ONLY = {"finetune_mfu_ratio", "finetune_gpu_memory_allocated_bytes", "finetune_gpu_memory_reserved_bytes"}
METRIC = re.compile(r"\bfinetune_[a-z_]+\b")


def exported_names(registry) -> set[str]:
    """Series names a registry exports (counters as `_total`, histograms as `_bucket/_sum/_count`)."""
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


@pytest.fixture(scope="module")
def operator_metrics(prometheus):
    """The operator's real metrics module, serving phases of three jobs, a transition, a reconcile and an error."""
    m = OperatorMetrics(lambda: ["Running", "Pending", "Failed"])
    m.transitions.labels("Pending", "Running").inc()
    m.reconcile_seconds.labels("status").observe(0.02)
    m.reconcile_errors.labels("create", "ReconcileError").inc()
    port = prometheus.free_port()
    m.serve(port, addr="127.0.0.1")
    prometheus.add_target("operator", f"127.0.0.1:{port}", component="operator")
    return m


@pytest.fixture(scope="module")
def scraped_run(prometheus, operator_metrics, quickstart_model, tmp_path_factory):
    """A real `finetune run` of the quickstart (CPU) with its metrics endpoint scraped every 200ms."""
    tmp = tmp_path_factory.mktemp("scraped")
    job = write_job(tmp, quickstart_model, **{"training.maxSteps": STEPS, "training.evalEverySteps": 50,
                                              "training.logEverySteps": 50, "output.saveEverySteps": 50})
    port = prometheus.free_port()
    prometheus.add_target("trainer", f"127.0.0.1:{port}", pod="trainer-0")
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1", FINETUNE_METRICS_PORT=str(port))
    started = time.time()
    run = subprocess.run([sys.executable, "-m", "finetune_cli.main", "run", str(job)], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # the raw samples the server kept of this run (a range selector returns them with their scrape times)
    window = f"[{int(time.time() - started) + 30}s]"
    sel = f'{{job_name="{JOB}", namespace="{NAMESPACE}"}}'
    steps = prometheus.query(f"finetune_step{sel}{window}")
    losses = prometheus.query(f"finetune_train_loss{sel}{window}")
    assert len(steps) == 1 and len(losses) == 1, (steps, losses, prometheus.log_tail())
    return {"out": tmp / "out", "run": run, "steps": steps[0]["values"], "losses": losses[0]["values"]}


def test_step_advances_across_scrapes(scraped_run):
    steps = [float(v) for _, v in scraped_run["steps"]]
    assert steps == sorted(steps), "finetune_step went backwards"
    assert len(set(steps)) >= 4, f"the step advanced over too few scrapes: {sorted(set(steps))}"
    assert steps[-1] == STEPS


def test_scraped_loss_is_the_trainers_logged_loss(scraped_run):
    logged = {r["step"]: r["loss"] for r in history(scraped_run["out"]) if "loss" in r}
    step_at = {t: int(float(v)) for t, v in scraped_run["steps"]}
    pairs = [(step_at[t], float(v)) for t, v in scraped_run["losses"] if t in step_at and step_at[t] > 0]
    assert len(pairs) >= 3, pairs
    for step, loss in pairs:
        assert math.isclose(loss, logged[step], rel_tol=1e-9), (step, loss, logged[step])
    assert pairs[-1][1] < 0.5 * logged[1], "the loss the dashboard shows should fall as the run's log says"


@pytest.fixture(scope="module")
def at_last_scrape(scraped_run) -> float:
    """Evaluation time: the last scrape of the run, when every trainer series was live."""
    return float(scraped_run["steps"][-1][0])


def _substitute(expr: str) -> str:
    """The expression as Grafana sends it with our job selected and a 1m rate interval."""
    return (expr.replace("$namespace", re.escape(NAMESPACE)).replace("$job", re.escape(JOB))
            .replace("$__rate_interval", "1m"))


def _may_be_empty(expr: str, operator_names: set[str]) -> bool:
    """CUDA-only series on this CPU run, or operator series the operator does not export (yet)."""
    names = set(METRIC.findall(expr))
    return bool(names) and all(n in CUDA_ONLY or (n.startswith("finetune_operator_") and n not in operator_names)
                               for n in names)


def test_every_dashboard_query_returns_data(prometheus, scraped_run, operator_metrics, at_last_scrape):
    operator_names = exported_names(operator_metrics.registry)
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    empty = []
    for title, expr in panel_queries(dashboard):
        result = prometheus.query(_substitute(expr), at=at_last_scrape)  # asserts status success
        if not result and not _may_be_empty(expr, operator_names):
            empty.append((title, expr))
    assert not empty, f"dashboard queries with no data while the run was live: {empty}"


def test_dashboard_variables_list_the_run(prometheus, scraped_run, at_last_scrape):
    dashboard = json.loads(DASHBOARD_FILE.read_text())
    found = {}
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
        assert m, var["query"]
        ans = prometheus.api(f"label/{m[2]}/values", **{"match[]": _substitute(m[1]),
                                                         "start": at_last_scrape - 60, "end": at_last_scrape})
        assert ans["status"] == "success", ans
        found[var["name"]] = ans["data"]
    assert found == {"namespace": [NAMESPACE], "job": [JOB]}


def test_every_alert_expression_is_valid_and_names_live_metrics(prometheus, scraped_run, operator_metrics,
                                                                 at_last_scrape):
    operator_names = exported_names(operator_metrics.registry)
    trainer_names = exported_names(TrainerMetrics("ns", "declared", 0).registry)
    for name, expr in alerts.expressions().items():
        prometheus.query(expr, at=at_last_scrape)  # accepted by the server (status success)
        for metric in set(METRIC.findall(expr)):
            if metric.startswith("finetune_operator_") and metric not in operator_names:
                continue  # reported by tests/unit/monitoring/test_dashboard.py's name check
            assert metric in trainer_names | operator_names, (name, metric)
            assert prometheus.query(metric, at=at_last_scrape), f"{name}: no {metric} series while the run was live"


def test_rules_load_and_a_healthy_run_raises_no_training_alert(prometheus, scraped_run):
    rules = prometheus.api("rules")["data"]["groups"]
    names = {r["name"] for g in rules for r in g["rules"]}
    assert names == set(alerts.expressions()), names
    prometheus.wait_for("every rule evaluated", lambda: all(
        r.get("lastEvaluation", "").startswith("20") for g in prometheus.api("rules")["data"]["groups"]
        for r in g["rules"]), timeout=30)
    bad = [(r["name"], r.get("lastError")) for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]
           if r["health"] != "ok"]
    assert not bad, bad
    assert prometheus.query(f'ALERTS{{job_name="{JOB}"}}[10m]') == [], "a healthy run raised an alert"


def test_run_prints_where_its_tensorboard_events_and_curves_are(scraped_run):
    """Point 4 of watching a local run: the paths the CLI prints hold the TensorBoard scalars and the PNG."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    stdout = scraped_run["run"].stdout
    logdir = Path(re.search(r"^tensorboard: tensorboard --logdir (\S+)$", stdout, re.M)[1])
    png = Path(re.search(r"^curves:\s+(\S+)$", stdout, re.M)[1])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    events = EventAccumulator(str(logdir))
    events.Reload()
    loss = {e.step: e.value for e in events.Scalars("train/loss")}
    logged = {r["step"]: r["loss"] for r in history(scraped_run["out"]) if "loss" in r}
    assert sorted(loss) == sorted(logged) and max(loss) == STEPS
    assert all(math.isclose(loss[s], logged[s], rel_tol=1e-6) for s in loss)  # TensorBoard keeps float32
    assert events.Scalars("eval/eval_loss")
