"""The real node runs pods the way a cluster's kubelet does, so the operator's tests can rely on it.

Each test applies a pod as a user would and reads back, with kubectl, what a user reads: phase, exit code,
termination message, logs, pod IP. The pods run the operator image (python, small); the trainer's own pods are
exercised in test_training.py.
"""

from __future__ import annotations

import base64
import json
import urllib.request

from controlplane import ControlPlane, wait_for
from node import RealNode, pod_placement

OPERATOR_IMAGE = "localhost/finetune/operator:test"


def pod(name: str, node: RealNode, command: list[str], **container) -> dict:
    """A hardened pod like the operator's trainer pods (non-root, read-only root, no capabilities) on `node`."""
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": pod_placement(node.name) | {
            "restartPolicy": "Never", "automountServiceAccountToken": False, "enableServiceLinks": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": OPERATOR_IMAGE, "imagePullPolicy": "Never", "command": command,
                "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                    "capabilities": {"drop": ["ALL"]}},
            } | container],
        },
    }


def wait_terminated(cp: ControlPlane, name: str, namespace: str, timeout: float = 120) -> dict:
    """The pod once its container has terminated (the kubelet wrote its final status)."""
    def done():
        p = cp.get_json("pod", name, "-n", namespace) or {}
        statuses = (p.get("status") or {}).get("containerStatuses") or []
        if statuses and "terminated" in statuses[0]["state"] and p["status"]["phase"] in ("Succeeded", "Failed"):
            return p
        return None

    try:
        return wait_for(done, timeout, f"pod {namespace}/{name} to terminate")
    except TimeoutError as e:
        p = cp.get_json("pod", name, "-n", namespace) or {}
        raise AssertionError(f"{e}; status: {json.dumps(p.get('status'), indent=1)}") from None


def test_pod_runs_its_rendered_command_env_and_volumes_and_reports_how_it_ended(control_plane, real_node, namespace):
    cp = control_plane
    cp.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tok", "namespace": namespace},
              "data": {"token": base64.b64encode(b"s3cret").decode()}})
    cp.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": namespace},
              "data": {"config.json": '{"steps": 3}'}})
    script = (
        'echo "pod=$POD_NAME ip=$POD_IP token=$TOKEN rank=$1"; cat /etc/finetune/config.json; echo; '
        'id -u; touch /root-is-writable 2>/dev/null || echo "root read-only"; '
        'echo data > /scratch/f && cat /scratch/f; '
        'printf \'{"outcome": "Failed", "reason": "DataError"}\' > /dev/termination-log; exit 3'
    )
    manifest = pod("runs", real_node, ["sh", "-c", script, "--", "$(RANK)"],
                   env=[{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}},
                        {"name": "RANK", "value": "0"}],
                   volumeMounts=[{"name": "cfg", "mountPath": "/etc/finetune", "readOnly": True},
                                 {"name": "scratch", "mountPath": "/scratch"}],
                   terminationMessagePolicy="FallbackToLogsOnError")
    manifest["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "cfg"}},
                                   {"name": "scratch", "emptyDir": {}}]
    manifest["metadata"]["namespace"] = namespace
    cp.apply(manifest)

    p = wait_terminated(cp, "runs", namespace)
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert p["status"]["phase"] == "Failed" and p["spec"]["nodeName"] == real_node.name
    assert term["exitCode"] == 3 and term["reason"] == "Error"
    assert json.loads(term["message"]) == {"outcome": "Failed", "reason": "DataError"}
    logs = cp.kubectl("logs", "runs", "-n", namespace)
    assert logs.returncode == 0, logs.stderr
    ip = p["status"]["podIP"]
    assert f"pod=runs ip={ip} token=s3cret rank=0" in logs.stdout
    assert '{"steps": 3}' in logs.stdout and "root read-only" in logs.stdout and "\ndata\n" in logs.stdout
    assert logs.stdout.splitlines()[2] == "1000"


def test_without_a_termination_message_the_log_tail_is_reported(control_plane, real_node, namespace):
    manifest = pod("fallback", real_node, ["sh", "-c", "echo first; echo 'error: bad row at train.jsonl:7'; exit 2"],
                   terminationMessagePolicy="FallbackToLogsOnError")
    manifest["metadata"]["namespace"] = namespace
    control_plane.apply(manifest)
    p = wait_terminated(control_plane, "fallback", namespace)
    term = p["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 2
    assert term["message"].strip().endswith("error: bad row at train.jsonl:7")


def test_pod_ip_is_reachable_from_the_host_like_the_operator_scrapes_it(control_plane, real_node, namespace):
    manifest = pod("serves", real_node, ["python3", "-m", "http.server", "8000", "--directory", "/etc"])
    manifest["metadata"]["namespace"] = namespace
    control_plane.apply(manifest)

    def ip():
        p = control_plane.get_json("pod", "serves", "-n", namespace) or {}
        st = p.get("status") or {}
        return st.get("podIP") if st.get("phase") == "Running" else None

    addr = wait_for(ip, 120, "pod serves Running with an IP")
    body = wait_for(lambda: urllib.request.urlopen(f"http://{addr}:8000/hostname", timeout=2).read(), 30,
                    f"http://{addr}:8000/")
    assert body.decode().strip() == "serves"  # the pod's own /etc/hostname, written by the kubelet
    res = control_plane.kubectl("delete", "pod", "serves", "-n", namespace, "--timeout=60s")
    assert res.returncode == 0, res.stderr


def test_node_reports_this_machines_resources_and_keeps_other_pods_off(control_plane, real_node):
    node = control_plane.get_json("node", real_node.name)
    assert int(node["status"]["allocatable"]["cpu"]) >= 1
    assert any(t["key"] == "finetune.io/real-node" for t in node["spec"]["taints"])
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_pods_find_each_other_by_their_headless_service_names(control_plane, real_node, namespace):
    """Cluster DNS as multi-node jobs use it: pod `a` (hostname + subdomain) is `a.peers.<ns>.svc` to other pods,
    before it is Ready (publishNotReadyAddresses), and the Service's name lists it."""
    cp = control_plane
    cp.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers", "namespace": namespace},
              "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"group": "peers"},
                       "ports": [{"name": "p", "port": 8000}]}})
    a = pod("a", real_node, ["python3", "-c", "import signal; signal.pause()"])
    a["metadata"] |= {"namespace": namespace, "labels": {"group": "peers"}}
    a["spec"] |= {"hostname": "a", "subdomain": "peers", "terminationGracePeriodSeconds": 1}
    cp.apply(a)

    def ip():
        p = cp.get_json("pod", "a", "-n", namespace) or {}
        return (p.get("status") or {}).get("podIP")

    addr = wait_for(ip, 120, "pod a with an IP")
    script = ("import socket, sys\n"
              "for name in sys.argv[1:]:\n"
              "    print(name, sorted({a[4][0] for a in socket.getaddrinfo(name, None, socket.AF_INET)}))\n")
    b = pod("b", real_node, ["python3", "-c", script, f"a.peers.{namespace}.svc", "peers"])
    b["metadata"]["namespace"] = namespace
    cp.apply(b)
    p = wait_terminated(cp, "b", namespace)
    logs = cp.kubectl("logs", "b", "-n", namespace).stdout
    assert p["status"]["phase"] == "Succeeded", (p["status"], logs)
    assert f"a.peers.{namespace}.svc ['{addr}']" in logs and f"peers ['{addr}']" in logs, logs
