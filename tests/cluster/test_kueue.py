"""Kueue for real: its controller admits FineTuneJobs by GPU quota, in order, and preempts for priority.

A control plane of its own (its API server routes webhooks to endpoints: kueue.py), Kueue's controller manager
built from its Go module, the operator, and kwok GPU nodes. The queues are examples/kueue/queues.yaml as shipped
(one ClusterQueue per test, renamed, so that tests do not share quota). Jobs are submitted with `finetune submit`.
kwok plays the trainer: a preempted pod is deleted as a kubelet would after SIGTERM; that the trainer saves a
checkpoint on SIGTERM and resumes from it is the slow tier's (tests/slow/test_resume.py) - here the scheduling.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from cli_process import finetune
from conftest import cluster_bin_dir
from controlplane import ControlPlane, wait_for
from kueue import Kueue, KueueControlPlane, kueue_dir
from pod_behaviour import kubelet_reports, runs_long
from scenario import (children, condition, events, ftj, get_ftj, install_crd, running_operator, wait_phase,
                      wait_status)


REPO = Path(__file__).resolve().parents[2]
QUEUES = REPO / "examples" / "kueue" / "queues.yaml"
NODE = "gpu-kueue"


@pytest.fixture(scope="module")
def kcp():
    workdir = Path(tempfile.mkdtemp(prefix="finetune-kueue-"))
    bins = cluster_bin_dir()
    cp = KueueControlPlane(bins, workdir)
    kueue = Kueue(cp, kueue_dir(bins))
    try:
        cp.start()
        cp.add_gpu_node(NODE, gpus=8)  # more GPUs than any ClusterQueue's quota: Kueue, not the node, decides
        kueue.start()
        install_crd(cp)
        with running_operator(cp):
            yield cp
    finally:
        kueue.stop()
        keep = os.environ.get("FINETUNE_KEEP_CLUSTER") == "1"
        cp.stop(remove=not keep)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def queue(kcp) -> tuple[str, str]:
    """(namespace, ClusterQueue) from examples/kueue/queues.yaml: a 2-GPU quota, LocalQueue team-a, priorities."""
    ns = kcp.create_namespace(f"k-{uuid.uuid4().hex[:8]}")
    cq = f"gpus-{ns}"
    for doc in yaml.safe_load_all(QUEUES.read_text()):
        if doc["kind"] == "ClusterQueue":
            doc["metadata"]["name"] = cq
            doc["spec"]["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": ns}}
        if doc["kind"] == "LocalQueue":
            doc["metadata"]["namespace"], doc["spec"]["clusterQueue"] = ns, cq
        kcp.apply(doc)
    yield ns, cq
    kcp.kubectl("delete", "namespace", ns, "--wait=false")


def submit(cp: ControlPlane, tmp_path: Path, name: str, ns: str, priority: str = "low-priority") -> None:
    obj = runs_long().on(ftj(name, ns, gpus=2, node=NODE, labels={
        "kueue.x-k8s.io/queue-name": "team-a", "kueue.x-k8s.io/priority-class": priority}))
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(obj))
    res = finetune(cp, "submit", str(path))
    assert res.returncode == 0, res.stderr


def queued(obj: dict, reason: str = "Queued") -> bool:
    c = condition(obj, "Suspended") or {}
    return (obj.get("status") or {}).get("phase") == "Pending" and c.get("status") == "True" and c.get("reason") == \
        reason


def pods(cp: ControlPlane, ns: str, name: str, live: bool = True) -> list[dict]:
    return [p for p in children(cp, ns, name)["pods"]
            if not live or (p["status"].get("phase") in ("Pending", "Running") and not p["metadata"].get(
                "deletionTimestamp"))]


def finish(cp: ControlPlane, ns: str, name: str) -> None:
    """The trainer of `name` ends with exit 0, as its kubelet would report it."""
    for pod in pods(cp, ns, name):
        kubelet_reports(cp, ns, pod, exit_code=0, reason="Completed",
                        message=json.dumps({"outcome": "Succeeded", "steps": 10, "outputPath": "/tmp/out"}))
    wait_phase(cp, name, ns, "Succeeded")


def test_the_gpu_quota_admits_finetunejobs_in_order(kcp, queue, tmp_path):
    ns, cq = queue
    submit(kcp, tmp_path, "first", ns)
    wait_phase(kcp, "first", ns, "Running")
    submit(kcp, tmp_path, "second", ns)
    obj = wait_status(kcp, "second", ns, queued, "queued behind the first (2 of 2 GPUs taken)")
    said = condition(obj, "Suspended")["message"]  # Kueue's own reason, from the Workload
    assert "LocalQueue 'team-a'" in said and "insufficient unused quota for nvidia.com/gpu" in said, said
    job = children(kcp, ns, "second")["jobs"][0]
    assert job["spec"]["suspend"] is True and not pods(kcp, ns, "second", live=False)  # Kueue's webhook held it
    res = finetune(kcp, "list", "-n", ns)
    assert [line.split()[:2] for line in res.stdout.splitlines()[1:]] == [["first", "Running"], ["second", "Pending"]]

    finish(kcp, ns, "first")  # its quota returns to the ClusterQueue
    wait_phase(kcp, "second", ns, "Running")
    assert [p["spec"]["nodeName"] for p in pods(kcp, ns, "second")] == [NODE]


def test_a_higher_priority_job_preempts_a_running_one_which_resumes_when_readmitted(kcp, queue, tmp_path):
    ns, cq = queue
    submit(kcp, tmp_path, "low", ns, "low-priority")
    wait_phase(kcp, "low", ns, "Running")
    first_pod = pods(kcp, ns, "low")[0]["metadata"]["uid"]
    submit(kcp, tmp_path, "high", ns, "high-priority")

    obj = wait_status(kcp, "low", ns, lambda o: queued(o, "Preempted"),
                      "the low-priority job preempted back into the queue", timeout=120)
    assert "preempted by Kueue" in obj["status"]["message"] and obj["status"]["restarts"] == 1, obj["status"]
    warned = [e for e in events(kcp, "low", ns) if e["type"] == "Warning" and e["reason"] == "Preempted"]
    assert len(warned) == 1, events(kcp, "low", ns)
    wait_for(lambda: not pods(kcp, ns, "low"), 60, "the preempted job's pods to stop")
    assert children(kcp, ns, "low")["jobs"][0]["spec"]["suspend"] is True
    wait_phase(kcp, "high", ns, "Running")
    workloads = kcp.get_json("workloads.kueue.x-k8s.io", "-n", ns)["items"]
    evicted = [c for w in workloads for c in w["status"].get("conditions", []) if c["type"] == "Evicted"]
    assert any(c["reason"] == "Preempted" for c in evicted), evicted

    finish(kcp, ns, "high")
    obj = wait_phase(kcp, "low", ns, "Running", timeout=120)  # readmitted: new pods, resuming the checkpoint
    again = pods(kcp, ns, "low")
    assert again and again[0]["metadata"]["uid"] != first_pod
    assert obj["status"]["restarts"] == 1, obj["status"]  # the preemption, counted once (Kueue's eviction stats)


def test_cancel_and_resume_of_a_queued_job_go_through_its_kueue_workload(kcp, queue, tmp_path):
    ns, _ = queue
    submit(kcp, tmp_path, "paused", ns)
    wait_phase(kcp, "paused", ns, "Running")
    res = finetune(kcp, "cancel", "paused", "-n", ns)
    assert res.returncode == 0, res.stderr
    wait_phase(kcp, "paused", ns, "Suspended")
    wl = kcp.get_json("workloads.kueue.x-k8s.io", "-n", ns)["items"]
    assert [w["spec"].get("active") for w in wl] == [False]  # Kueue, not the operator, stopped the Job
    wait_for(lambda: not pods(kcp, ns, "paused"), 60, "the suspended job's pods to stop")
    assert get_ftj(kcp, "paused", ns)["status"]["phase"] == "Suspended"  # Kueue did not start it again

    assert finetune(kcp, "resume", "paused", "-n", ns).returncode == 0
    wait_phase(kcp, "paused", ns, "Running", timeout=120)
    assert [w["spec"].get("active") for w in kcp.get_json("workloads.kueue.x-k8s.io", "-n", ns)["items"]] == [True]
