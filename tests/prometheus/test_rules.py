"""The chart's alert rules through Prometheus' own tool: `promtool check rules` accepts the generated file,
`promtool test rules` shows each alert firing and staying quiet on synthetic series (alerts_test.yaml), and the
chart's PrometheusRule, as `helm template` renders it, carries exactly those rules.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from finetune_monitoring import alerts
from finetune_monitoring.dashboard import DASHBOARD_FILE, RULES_FILE

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART = REPO / "charts" / "finetune-operator"
ALERT_TESTS = HERE / "alerts_test.yaml"


def test_promtool_check_rules_accepts_the_generated_file(promtool):
    res = subprocess.run([promtool, "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(alerts.expressions())} rules found" in res.stdout + res.stderr


def test_promtool_unit_tests_of_every_alert_pass(promtool):
    res = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True, cwd=HERE)
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    cases = [c for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    firing = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    assert firing == quiet == set(alerts.expressions())


def _helm() -> str:
    if os.environ.get("FINETUNE_K8S_BIN"):
        return str(Path(os.environ["FINETUNE_K8S_BIN"]) / "helm")
    res = subprocess.run(["bash", str(REPO / "scripts" / "install-cluster-tools.sh")], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"scripts/install-cluster-tools.sh failed:\n{res.stderr[-2000:]}", pytrace=False)
    return str(Path(res.stdout.strip().splitlines()[-1]) / "helm")


def _render(*args: str) -> list[dict]:
    res = subprocess.run([_helm(), "template", "ft", str(CHART), "--namespace", "ml", *args],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def test_chart_prometheusrule_carries_the_checked_rules(promtool, tmp_path):
    docs = _render("--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
                   "--set", "metrics.prometheusRule.labels.release=kube-prometheus-stack")
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == alerts.rule_groups()
    # the rendered spec is itself a rule file Prometheus accepts
    (tmp_path / "rendered.yaml").write_text(yaml.safe_dump(rule["spec"]))
    res = subprocess.run([promtool, "check", "rules", str(tmp_path / "rendered.yaml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # without the Prometheus Operator's API (or when disabled) there is no PrometheusRule to fail the install
    assert not [d for d in _render() if d["kind"] == "PrometheusRule"]
    assert not [d for d in _render("--api-versions", "monitoring.coreos.com/v1/PrometheusRule",
                                   "--set", "metrics.prometheusRule.enabled=false") if d["kind"] == "PrometheusRule"]


def test_chart_dashboard_configmap_is_found_by_grafanas_sidecar():
    docs = _render("--set", "metrics.grafanaDashboard.annotations.grafana_folder=ML")
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    assert cm["metadata"]["namespace"] == "ml"
    assert json.loads(cm["data"]["finetune.json"]) == json.loads(DASHBOARD_FILE.read_text())
    elsewhere = _render("--set", "metrics.grafanaDashboard.namespace=monitoring")
    assert [d["metadata"]["namespace"] for d in elsewhere if d["metadata"]["name"].endswith("-dashboard")] == \
        ["monitoring"]
    assert not [d for d in _render("--set", "metrics.grafanaDashboard.enabled=false")
                if d["metadata"]["name"].endswith("-dashboard")]
