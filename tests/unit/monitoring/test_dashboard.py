"""dashboard + alerts: the chart's Grafana dashboard is valid for Grafana, the checked-in files are fresh, and every
metric the dashboard and the rules query is one the trainer or the operator exports.

The queries themselves run against a real Prometheus in tests/prometheus (slow tier).
"""

from __future__ import annotations

import re

import pytest

from finetune_monitoring import alerts
from finetune_monitoring.dashboard import (DASHBOARD_FILE, RULES_FILE, build_dashboard, panel_queries,
                                         render_dashboard, render_rules)
from finetune_operator.metrics import OperatorMetrics
from finetune_trainer.metrics import TrainerMetrics

METRIC = re.compile(r"\bfinetune_[a-z_]+\b")


@pytest.fixture(scope="module")
def model():
    return build_dashboard()


def _panels(model):
    return [p for p in model["panels"] if p["type"] != "row"]


def test_checked_in_files_are_fresh():
    assert DASHBOARD_FILE.read_text() == render_dashboard(), "run `make charts`"
    assert RULES_FILE.read_text() == render_rules(), "run `make charts`"


def test_dashboard_model_is_one_grafana_loads(model):
    assert isinstance(model["schemaVersion"], int) and model["schemaVersion"] >= 39
    assert model["uid"] == "finetune-operator" and model["title"]
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    # open rows keep their panels beside them; the grid is 24 wide and no two panels overlap
    cells = set()
    for p in model["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_variables_pick_a_prometheus_and_a_finetune_job(model):
    variables = {v["name"]: v for v in model["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    job = variables["job"]
    assert job["type"] == "query" and re.fullmatch(r"label_values\(finetune_step\{.*\}, job_name\)", job["query"])
    assert job["multi"] and job["includeAll"] and job["allValue"] == ".*"
    assert variables["namespace"]["query"] == "label_values(finetune_step, namespace)"
    for v in (variables["namespace"], job):
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    # every $variable a query uses is defined (Grafana's built-ins aside)
    used = {m for _, e in panel_queries(model) for m in re.findall(r"\$(\w+)", e)} - {"__rate_interval"}
    assert used <= set(variables), used - set(variables)


def test_every_panel_has_the_datasource_and_queries(model):
    for p in _panels(model):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}", p["title"]


def test_dashboard_covers_what_a_person_watching_a_fine_tune_asks(model):
    exprs = " ".join(e for _, e in panel_queries(model))
    for metric in ("finetune_operator_jobs", "finetune_train_loss", "finetune_eval_loss", "finetune_learning_rate",
                   "finetune_tokens_per_second", "finetune_trainable_tokens_per_second", "finetune_mfu_ratio",
                   "finetune_gpu_memory_allocated_bytes", "finetune_eta_seconds"):
        assert metric in exprs, metric


def _exported(registry) -> set[str]:
    names = set()
    for family in registry.collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    return names


EXPORTED = _exported(TrainerMetrics("ns", "job", rank=0).registry) | _exported(OperatorMetrics(lambda: []).registry)
QUERIED = sorted({m for _, e in panel_queries(build_dashboard()) for m in METRIC.findall(e)}
                 | {m for e in alerts.expressions().values() for m in METRIC.findall(e)})


@pytest.mark.parametrize("metric", QUERIED)
def test_every_queried_metric_is_exported(metric):
    assert metric in EXPORTED


def test_alert_rules_say_who_is_affected_and_what_to_do():
    rules = [r for g in alerts.rule_groups()["groups"] for r in g["rules"]]
    assert len({r["alert"] for r in rules}) == len(rules)
    assert {"FineTuneJobFailed", "FineTuneTrainingStalled", "FineTuneLossNaN", "FineTuneLossExploding",
            "FineTuneJobPendingTooLong", "FineTuneCheckpointOverdue"} <= {r["alert"] for r in rules}
    for r in rules:
        assert r["labels"]["severity"] in ("warning", "critical")
        assert re.fullmatch(r"\d+m", r["for"])
        assert r["annotations"]["summary"] and len(r["annotations"]["description"]) > 60
    for r in alerts.training_rules():  # one alert per job: the text names it
        assert "$labels.job_name" in r["annotations"]["summary"]
