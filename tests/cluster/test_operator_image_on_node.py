"""The operator image, run as the chart runs it, reconciling a FineTuneJob end to end.

How it runs, and why: as a pod on the real node (node.py), from the operator image built by `make images`
(Dockerfile.operator), with the chart's own objects rendered by `helm template`: its ServiceAccount, ClusterRole
and ClusterRoleBinding as they are, and its Deployment's pod (the image's ENTRYPOINT, the chart's args and env,
uid 65532, read-only root, no capabilities, probes) with the chart's values for image, placement and ports.
So the operator reaches the API server as in a cluster: in-cluster config, the ServiceAccount token the kubelet
projects into the pod, the cluster's CA, and exactly the chart's RBAC (a missing verb fails here).
Running the image with runc directly would need a kubeconfig made by hand and would skip all of that.

Three changes this machine needs, made to the rendered Deployment and nowhere else: `hostNetwork: true` and
KUBERNETES_SERVICE_HOST/PORT set to the API server's loopback address (the test API server listens on
127.0.0.1 and no kube-proxy routes the `kubernetes` Service's virtual IP), and the health port moved off the
chart's fixed 8081 (in the host's network, other processes may hold it).

The FineTuneJob it reconciles runs on a kwok GPU node (pod_behaviour: the pod finishes with a result): what is
tested here is the operator process, not training (test_real_node_training.py trains for real). It serves
/metrics, and on SIGTERM (the Deployment scaled to 0, as `helm uninstall` or a rollout does) it exits with code 0
on its own, before the grace period would have it killed (137).
"""

from __future__ import annotations

import urllib.request
import uuid

import pytest
import yaml
from controlplane import ControlPlane, free_port, wait_for
from node import pod_placement
from pod_behaviour import finishes
from real_training import PodWatch
from scenario import REPO, apply, condition, ftj, install_crd, wait_phase
from support import images

CHART = REPO / "charts" / "finetune-operator"
RELEASE = "ftnode"  # not test_chart_install's release: cluster-scoped names differ


@pytest.fixture
def operator_pod(control_plane: ControlPlane, real_node):
    """The chart's operator pod on the real node (see the module docstring); yields (namespace, metrics port)."""
    cp = control_plane
    install_crd(cp)
    ns = cp.create_namespace(f"ftop-{uuid.uuid4().hex[:6]}")  # no Pod Security label: hostNetwork is privileged
    repo, tag = images.build("operator")["operator"].ref.rsplit(":", 1)
    metrics, health = free_port(), free_port()
    placement = pod_placement(real_node.name)
    values = {"image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
              "metrics": {"port": metrics}, "resyncSeconds": 2, "handlerBackoffSeconds": 1,
              "nodeSelector": placement["nodeSelector"], "tolerations": placement["tolerations"]}
    res = cp.helm("template", RELEASE, str(CHART), "-n", ns, "-f", "-", input=yaml.safe_dump(values))
    assert res.returncode == 0, res.stderr
    docs = [d for d in yaml.safe_load_all(res.stdout) if d]
    wanted = [d for d in docs if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment")]
    assert sorted(d["kind"] for d in wanted) == ["ClusterRole", "ClusterRoleBinding", "Deployment", "ServiceAccount"]
    deploy = next(d for d in wanted if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    pod["hostNetwork"] = True
    env = [e for e in container["env"] if e["name"] != "FINETUNE_LIVENESS"]
    container["env"] = env + [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                              {"name": "KUBERNETES_SERVICE_PORT", "value": str(cp.ports["apiserver"])},
                              {"name": "FINETUNE_LIVENESS", "value": f"http://0.0.0.0:{health}/healthz"}]
    for port in container["ports"]:
        if port["name"] == "healthz":
            port["containerPort"] = health
    for d in wanted:
        d.setdefault("metadata", {})["namespace"] = ns if d["kind"] in ("ServiceAccount", "Deployment") else None
        if d["metadata"]["namespace"] is None:
            del d["metadata"]["namespace"]
        cp.apply(d)
    try:
        yield ns, metrics, deploy["metadata"]["name"]
    finally:
        cp.kubectl("delete", "namespace", ns, "--wait=false")
        for d in wanted:
            if d["kind"].startswith("Cluster"):
                cp.kubectl("delete", d["kind"].lower(), d["metadata"]["name"], "--wait=false")


def test_operator_image_reconciles_a_job_serves_metrics_and_stops_cleanly_on_sigterm(
        control_plane, operator_pod, namespace):
    cp = control_plane
    ns, metrics_port, deployment = operator_pod
    selector = f"app.kubernetes.io/name=finetune-operator,app.kubernetes.io/instance={RELEASE}"
    with PodWatch(cp, ns, selector=selector) as watch:
        def ready():
            d = cp.get_json("deployment", deployment, "-n", ns) or {}
            return d if (d.get("status") or {}).get("readyReplicas") == 1 else None

        def operator_state() -> str:
            pods = cp.kubectl("get", "pods", "-n", ns, "-o", "yaml").stdout
            out = cp.kubectl("logs", "-n", ns, "-l", selector, "--tail=80").stdout
            return f"{pods[-3000:]}\n--- operator log ---\n{out}"

        try:
            wait_for(ready, 180, f"the operator Deployment {ns}/{deployment} ready (its /healthz probe)")
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{operator_state()}") from None
        (pod,) = cp.get_json("pods", "-n", ns, "-l", selector)["items"]
        assert pod["spec"]["hostNetwork"] and pod["spec"]["serviceAccountName"] == deployment

        # a job, end to end: children created, the (kwok) pod finishes, the status says Succeeded with the result
        node = f"gpu-opimage-{uuid.uuid4().hex[:4]}"
        cp.add_gpu_node(node, gpus=2)
        try:
            result = {"steps": 10, "finalLoss": 0.5, "outputPath": "/tmp/out", "manifestSha256": "b" * 64}
            assert apply(cp, finishes(after="1s", result=result).on(ftj("viaimage", namespace, node=node))) \
                .returncode == 0
            try:
                obj = wait_phase(cp, "viaimage", namespace, "Succeeded", timeout=120)
            except AssertionError as e:
                raise AssertionError(f"{e}\n{operator_state()}") from None
        finally:
            cp.kubectl("delete", "node", node, "--wait=false")
        assert condition(obj, "Succeeded")["status"] == "True" and obj["status"]["result"]["steps"] == 10

        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert "finetune_operator_reconcile_duration_seconds_count" in body, body[:3000]
        assert 'to_phase="Succeeded"' in body, body[:3000]  # finetune_operator_transitions_total

        # SIGTERM: the kubelet stops the container when the Deployment scales to 0
        res = cp.kubectl("scale", "deployment", deployment, "-n", ns, "--replicas=0")
        assert res.returncode == 0, res.stderr
        name = pod["metadata"]["name"]
        ended = watch.wait_ended(f"operator pod {name} to stop", name)[name]
    logs = cp.kubectl("logs", name, "-n", ns).stdout  # may be gone with the pod; shown only on failure
    assert ended["exitCode"] == 0, (ended, logs[-3000:])
