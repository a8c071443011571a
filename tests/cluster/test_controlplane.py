"""Proof that the cluster tier is a real cluster: the scheduler places GPU pods, the Job controller completes
Jobs, the garbage collector cascades, and kwok plays pod lifecycles - each checked as a user would see it."""

from __future__ import annotations

from controlplane import CHAOS_FAIL_LABEL, GPU_NODE, ControlPlane, wait_for

IMAGE = "registry.invalid/finetune/trainer:test"  # never pulled: kwok plays the kubelet


def _pod(name: str, namespace: str, gpus: int, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"restartPolicy": "Never",
                 # the test namespaces enforce the "restricted" Pod Security level
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "trainer", "image": IMAGE,
                                 "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                                 "resources": {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}}]},
    }


def _pod_in_phase(cp: ControlPlane, namespace: str, name: str, phase: str) -> dict | None:
    pod = cp.get_json("pod", name, "-n", namespace)
    return pod if pod and pod.get("status", {}).get("phase") == phase else None


def test_gpu_node_is_ready_with_two_gpus(control_plane: ControlPlane):
    res = control_plane.kubectl("get", "nodes", "--no-headers")
    assert res.returncode == 0, res.stderr
    rows = {line.split()[0]: line.split()[1] for line in res.stdout.splitlines()}
    assert rows.get(GPU_NODE) == "Ready", res.stdout

    res = control_plane.kubectl("get", "node", GPU_NODE, "--no-headers",
                                "-o", r"custom-columns=GPU:.status.allocatable.nvidia\.com/gpu")
    assert res.stdout.strip() == "2", res.stdout + res.stderr


def test_indexed_gpu_job_runs_to_complete(control_plane: ControlPlane, namespace: str):
    control_plane.apply({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "train", "namespace": namespace},
        "spec": {"completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimit": 0,
                 "template": {"spec": _pod("x", namespace, gpus=1)["spec"]}},
    })

    def complete():
        job = control_plane.get_json("job", "train", "-n", namespace)
        conds = {c["type"]: c["status"] for c in job.get("status", {}).get("conditions", [])}
        assert conds.get("Failed") != "True", job["status"]
        return job if conds.get("Complete") == "True" else None

    job = wait_for(complete, 120, "Job train to be Complete")
    assert job["status"]["succeeded"] == 2

    pods = control_plane.get_json("pods", "-n", namespace, "-l", "job-name=train")["items"]
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} == {GPU_NODE}  # bound by the scheduler
    assert {p["status"]["phase"] for p in pods} == {"Succeeded"}  # played by kwok
    assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods) == ["0", "1"]

    res = control_plane.kubectl("get", "job", "train", "-n", namespace, "--no-headers")
    assert "Complete" in res.stdout and "2/2" in res.stdout, res.stdout


def test_pod_wanting_three_gpus_stays_pending(control_plane: ControlPlane, namespace: str):
    control_plane.apply(_pod("too-big", namespace, gpus=3))

    def unschedulable():
        pod = control_plane.get_json("pod", "too-big", "-n", namespace)
        for c in pod.get("status", {}).get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return pod, c
        return None

    pod, cond = wait_for(unschedulable, 60, "PodScheduled=False on pod too-big")
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond["message"], cond["message"]
    assert pod["status"]["phase"] == "Pending"
    assert not pod["spec"].get("nodeName")


def test_deleting_owner_garbage_collects_child(control_plane: ControlPlane, namespace: str):
    control_plane.apply({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "owner", "namespace": namespace}, "data": {"k": "v"}})
    owner = control_plane.get_json("configmap", "owner", "-n", namespace)
    control_plane.apply({
        "apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"},
        "metadata": {"name": "child", "namespace": namespace,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                                          "uid": owner["metadata"]["uid"]}]},
    })
    assert control_plane.get_json("configmap", "child", "-n", namespace) is not None

    res = control_plane.kubectl("delete", "configmap", "owner", "-n", namespace)
    assert res.returncode == 0, res.stderr
    wait_for(lambda: control_plane.get_json("configmap", "child", "-n", namespace) is None, 60,
             "the garbage collector to delete ConfigMap child")


def test_chaos_labelled_pod_fails(control_plane: ControlPlane, namespace: str):
    control_plane.apply(_pod("doomed", namespace, gpus=1, labels={CHAOS_FAIL_LABEL: "true"}))
    control_plane.apply(_pod("bystander", namespace, gpus=0))  # no label, no Job: kwok keeps it Running

    pod = wait_for(lambda: _pod_in_phase(control_plane, namespace, "doomed", "Failed"), 60,
                   "pod doomed to be Failed")
    assert pod["spec"]["nodeName"] == GPU_NODE
    state = pod["status"]["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] != 0, state
    bystander = wait_for(lambda: _pod_in_phase(control_plane, namespace, "bystander", "Running"), 30,
                         "pod bystander to be Running")
    assert bystander["spec"]["nodeName"] == GPU_NODE


def test_chaos_labelled_job_fails(control_plane: ControlPlane, namespace: str):
    """The chaos stage outweighs pod-complete, so a Job whose pods carry the label fails deterministically."""
    template = _pod("x", namespace, gpus=1, labels={CHAOS_FAIL_LABEL: "true"})
    control_plane.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "crash", "namespace": namespace},
        "spec": {"completions": 1, "backoffLimit": 0,
                 "template": {"metadata": {"labels": template["metadata"]["labels"]}, "spec": template["spec"]}},
    })

    def failed():
        job = control_plane.get_json("job", "crash", "-n", namespace)
        conds = {c["type"]: c for c in job.get("status", {}).get("conditions", [])}
        assert conds.get("Complete", {}).get("status") != "True", job["status"]
        return conds.get("Failed") if conds.get("Failed", {}).get("status") == "True" else None

    cond = wait_for(failed, 90, "Job crash to be Failed")
    assert cond["reason"] == "BackoffLimitExceeded", cond


def test_helm_reaches_the_cluster(control_plane: ControlPlane):
    res = control_plane.helm("list", "--all-namespaces", "-o", "json")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
