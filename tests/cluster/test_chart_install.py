"""`helm install` of the chart on the real control plane: the CRD is served and teaches the API, the operator
Deployment comes up (kwok plays the kubelet: no container runs), and its RBAC is least-privilege."""

from __future__ import annotations

from pathlib import Path

import pytest
from controlplane import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "finetune-operator"
NS = "finetune-system"
RELEASE = "ft"


@pytest.fixture(scope="module")
def installed(control_plane):
    cp = control_plane
    crd = cp.get_json("crd", "finetunejobs.finetune.io")
    if crd and crd["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != "Helm" \
            and "meta.helm.sh/release-name" not in crd["metadata"].get("annotations", {}):
        # installed by an earlier test with kubectl: remove it so this test sees helm install it
        cp.kubectl("delete", "crd", "finetunejobs.finetune.io", "--wait=true", check=True)
    r = cp.helm("install", RELEASE, str(CHART), "-n", NS, "--create-namespace", "--wait", "--timeout", "120s")
    assert r.returncode == 0, r.stdout + r.stderr
    yield cp
    cp.helm("uninstall", RELEASE, "-n", NS)


def test_crd_is_served_with_short_name_and_explain(installed):
    cp = installed
    r = cp.kubectl("api-resources", "--api-group=finetune.io", "-o", "wide")
    assert r.returncode == 0 and "ftj" in r.stdout and "finetunejobs" in r.stdout, r.stdout + r.stderr
    r = cp.kubectl("explain", "ftj.spec.method.type")
    assert r.returncode == 0, r.stderr
    assert "qlora" in r.stdout and "adapters on a frozen base" in r.stdout
    # the types and defaults kubectl explain cannot show by itself are in the text it does show
    r = cp.kubectl("explain", "ftj.spec.training")
    assert r.returncode == 0, r.stderr
    block = r.stdout[r.stdout.index("microBatchSize"):]
    block = block[:block.index("\n\n")]
    assert "An integer >= 1, or `auto`" in block and "Default: `auto`" in block, block
    assert "`auto`, true or false" in r.stdout and "overriding" not in r.stdout
    r = cp.kubectl("get", "ftj", "-A")
    assert r.returncode == 0, r.stderr


def test_operator_deployment_is_available_and_hardened(installed):
    cp = installed
    name = f"{RELEASE}-finetune-operator"

    def available():
        d = cp.get_json("deployment", name, "-n", NS)
        return d if d and d.get("status", {}).get("availableReplicas", 0) >= 1 else None

    d = wait_for(available, 90, "operator Deployment available")
    pod = d["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert c.get("livenessProbe") and c.get("readinessProbe")


@pytest.mark.parametrize("verb,resource,allowed", [
    ("create", "jobs.batch", True), ("create", "configmaps", True), ("create", "services", True),
    ("patch", "finetunejobs.finetune.io/status", True), ("create", "events", True),
    ("get", "secrets", False), ("create", "pods/exec", False), ("delete", "nodes", False),
    ("patch", "finetunejobs.finetune.io", False), ("update", "jobs.batch", False), ("delete", "jobs.batch", False),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
])
def test_operator_rbac_is_least_privilege(installed, verb, resource, allowed):
    sa = f"system:serviceaccount:{NS}:{RELEASE}-finetune-operator"
    resource, _, sub = resource.partition("/")
    r = installed.kubectl("auth", "can-i", verb, resource, *([f"--subresource={sub}"] if sub else []), "--as", sa,
                          "-n", "default")
    assert r.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, r.stdout, r.stderr)


def test_helm_lint_strict_is_clean(control_plane):
    r = control_plane.helm("lint", "--strict", str(CHART))
    assert r.returncode == 0 and "0 chart(s) failed" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("prometheus_operator", [False, True])
def test_helm_template_renders_monitoring_only_with_the_prometheus_operator(control_plane, prometheus_operator):
    import yaml

    args = ["template", "ft", str(CHART), "-n", NS]
    if prometheus_operator:
        args += ["--api-versions", "monitoring.coreos.com/v1", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]
    r = control_plane.helm(*args)
    assert r.returncode == 0, r.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(r.stdout) if d}
    assert {"Deployment", "ClusterRole", "ClusterRoleBinding", "ServiceAccount", "Service", "NetworkPolicy",
            "ConfigMap"} <= kinds, kinds
    monitoring = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
    assert (monitoring <= kinds) if prometheus_operator else not (monitoring & kinds), kinds


def test_values_schema_refuses_bad_values_with_the_key(control_plane):
    r = control_plane.helm("template", "ft", str(CHART), "--set", "metrics.port=80")
    assert r.returncode != 0 and "/metrics/port" in r.stderr and "1,024" in r.stderr, r.stderr
