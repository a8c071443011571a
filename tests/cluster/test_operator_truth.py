"""The operator tells the truth (issue 14): every reason a trainer pod is not running reaches status with a reason of
its own and a message naming what is missing; retries are visible; each Event is told once.

The kubelet's part (a container waiting on a missing Secret or an image, a crash) is played by kwok through
pod_behaviour.py; the Job controller's and the scheduler's parts are the real ones.
"""

from __future__ import annotations

import pytest
from controlplane import wait_for
from pod_behaviour import fails, runs_long, waits
from scenario import (apply, children, condition, events, ftj, get_ftj, provide_volume, running_operator,
                      wait_status)


@pytest.fixture(scope="module")
def operator(cp):
    with running_operator(cp) as runner:
        yield runner


@pytest.fixture
def own_node(cp, request) -> str:
    name = "gpu-t-" + request.node.name.replace("_", "-").replace("[", "-").replace("]", "")[5:36].strip("-").lower()
    cp.add_gpu_node(name, gpus=2)
    yield name
    cp.kubectl("delete", "node", name, "--wait=false")


def _with(obj: dict, **spec) -> dict:
    obj["spec"] |= spec
    return obj


# (what is wrong, how the FineTuneJob is made, condition, reason, fragments the message must name)
CAUSES = {
    "no PriorityClass": (lambda ns, node: _with(ftj("pc", ns, node=node), scheduling={
        "nodeSelector": {"kubernetes.io/hostname": node}, "priorityClassName": "training-nonexistent"}),
        "Scheduled", "PriorityClassNotFound", ["training-nonexistent", "spec.scheduling.priorityClassName"]),
    "no Secret": (lambda ns, node: waits("CreateContainerConfigError", 'secret "hf-token" not found').on(
        _with(ftj("sec", ns, node=node), hfTokenSecretRef={"name": "hf-token"})),
        "Running", "SecretNotFound", ['Secret "hf-token"', "spec.hfTokenSecretRef.name", "kubectl"]),
    "image cannot be pulled": (lambda ns, node: waits(
        "ImagePullBackOff", 'Back-off pulling image "registry.invalid/finetune/trainer:test"').on(ftj("img", ns, node=node)),
        "Running", "ImagePullBackOff", ["registry.invalid/finetune/trainer:test", "spec.image"]),
    "trainer in a crash loop": (lambda ns, node: waits(
        "CrashLoopBackOff", "back-off 40s restarting failed container=trainer").on(ftj("loop", ns, node=node)),
        "Running", "CrashLoopBackOff", ["keeps exiting"]),
    "no PersistentVolumeClaim": (lambda ns, node: _with(ftj("pvc", ns, node=node), dataset={
        "paths": ["train.jsonl"], "format": "messages", "volume": {"claimName": "finetune-data"}}),
        "Scheduled", "PersistentVolumeClaimNotFound", ['"finetune-data"', "spec.dataset.volume.claimName",
                                                       "no node capacity is missing"]),
    "not enough GPUs": (lambda ns, node: ftj("big", ns, gpus=3, node=node),
                        "Scheduled", "Unschedulable", ["3 nvidia.com/gpu", "add nodes"]),
}


@pytest.mark.parametrize("cause", list(CAUSES))
def test_every_cause_reaches_status_with_its_own_reason(cp, operator, namespace, own_node, cause):
    make, ctype, reason, fragments = CAUSES[cause]
    obj = make(namespace, own_node)
    name = obj["metadata"]["name"]
    assert apply(cp, obj).returncode == 0
    got = wait_status(cp, name, namespace, lambda o: (condition(o, ctype) or {}).get("reason") == reason,
                      f"{ctype}={reason}", timeout=60)
    assert got["status"]["phase"] == "Pending"
    msg = condition(got, ctype)["message"]
    for fragment in fragments:
        assert fragment in msg, msg
    if reason != "Unschedulable":
        assert "add nodes" not in msg, msg  # capacity advice only when capacity is what is missing
    assert reason in got["status"]["message"] or fragments[0] in got["status"]["message"]
    evs = events(cp, name, namespace)
    warnings = [e for e in evs if e["type"] == "Warning" and e["reason"] == reason]
    assert len(warnings) == 1, [(e["type"], e["reason"]) for e in evs]
    # told once: no Normal event repeating the Warning's text
    assert not [e for e in evs if e["type"] == "Normal" and e["message"] == warnings[0]["message"]], evs


def test_a_crashing_trainer_is_restarting_with_attempt_exit_code_and_a_warning(cp, operator, namespace, own_node):
    obj = fails(exit_code=1, reason="Error", message="RuntimeError: CUDA error: an illegal memory access",
                after="2s").on(ftj("crash", namespace, node=own_node))
    assert apply(cp, obj).returncode == 0
    got = wait_status(cp, "crash", namespace, lambda o: (o.get("status") or {}).get("restarts", 0) >= 1,
                      "a restart", timeout=60)
    c = condition(got, "Restarting")
    assert c["status"] == "True" and c["reason"] == "TrainerFailed", c
    assert "exited with code 1" in c["message"] and "attempt 2 of 4" in c["message"], c
    assert "CUDA error" in c["message"]
    warnings = [e for e in events(cp, "crash", namespace) if e["reason"] == "Restarting"]
    assert warnings and all(e["type"] == "Warning" for e in warnings)
    assert "attempt 2 of 4" in warnings[0]["message"]
    res = cp.kubectl("get", "ftj", "crash", "-n", namespace, "-o", "wide", "--no-headers")
    assert res.stdout.split()[1] in ("Restarting", "Running"), res.stdout  # never "Pending" once it has run


def test_sigterm_exit_restarts_without_using_the_retry_budget(cp, operator, namespace, own_node):
    """A preempted trainer (exit 143 after its checkpoint) is replaced and not counted against backoffLimit."""
    obj = fails(exit_code=143, reason="Error", message="stopped by SIGTERM: checkpoint saved", after="1s").on(
        ftj("pre", namespace, node=own_node))
    assert apply(cp, obj).returncode == 0
    got = wait_status(cp, "pre", namespace, lambda o: (o.get("status") or {}).get("restarts", 0) >= 2,
                      "two restarts", timeout=90)
    job = children(cp, namespace, "pre")["jobs"][0]
    assert not job["status"].get("failed"), job["status"]  # nothing counted
    c = condition(got, "Restarting")
    assert c["reason"] == "Preempted" and "not counted against the retry budget" in c["message"], c
    assert "attempt 1 of 4" in c["message"]


def test_a_running_trainer_announces_running_once(cp, operator, namespace, own_node):
    assert apply(cp, runs_long().on(ftj("once", namespace, node=own_node))).returncode == 0
    wait_status(cp, "once", namespace, lambda o: (o.get("status") or {}).get("phase") == "Running", "Running")
    wait_for(lambda: any(e["reason"] == "Running" for e in events(cp, "once", namespace)), 30, "the Running event")
    reasons = [e["reason"] for e in events(cp, "once", namespace)]
    assert reasons.count("Running") == 1 and reasons.count("Pending") <= 1, reasons
    assert get_ftj(cp, "once", namespace)["status"]["phase"] == "Running"


def test_an_output_claim_smaller_than_the_plans_disk_peak_warns_naming_it(cp, operator, namespace, own_node):
    """A full fine-tune of an 8B model writes ~90 GiB per resumable checkpoint: a 5Gi claim would end in DiskFull
    hours later. The operator says so when it creates the Job (condition OutputVolume, one Warning), and the job
    still starts (the user may have set checkpoints to fit)."""
    cp.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "small", "namespace": namespace},
              "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                       "resources": {"requests": {"storage": "5Gi"}}}})
    provide_volume(cp, namespace, "small", "5Gi")
    obj = ftj("smallvol", namespace, node=own_node, model={"hubId": "meta-llama/Llama-3.1-8B"}, method={"type": "full"},
              output={"path": "out", "volume": {"claimName": "small"}})
    assert apply(cp, obj).returncode == 0
    got = wait_status(cp, "smallvol", namespace,
                      lambda o: (condition(o, "OutputVolume") or {}).get("reason") == "OutputVolumeTooSmall",
                      "the OutputVolume warning", timeout=60)
    msg = condition(got, "OutputVolume")["message"]
    assert "PersistentVolumeClaim small" in msg and "(5Gi)" in msg and "keepLastCheckpoints" in msg, msg
    assert children(cp, namespace, "smallvol")["jobs"], "the Job is created all the same"
    warned = [e for e in events(cp, "smallvol", namespace) if e["reason"] == "OutputVolumeTooSmall"]
    assert len(warned) == 1 and warned[0]["type"] == "Warning", warned
