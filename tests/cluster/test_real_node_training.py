"""Interrupted and distributed training on the real node, as a user sees it with kubectl and on the volume.

The operator (in a thread) renders the trainer Job; the real node (node.py: kubelet, containerd, runc, CoreDNS)
runs the trainer image's pods for real, on the quickstart's tiny model and data (CPU, a few dozen steps). Each
scenario interrupts or spreads the run and compares it with one uninterrupted 1-node run of the same spec
(`reference`, once per module): the same final loss in status.result and in the volume's manifest, and the
same loss at every step in the volume's history (metrics.jsonl), each step logged once.

- suspend (spec.suspend: true) mid-run: the pod gets SIGTERM, the trainer saves a checkpoint where it is and
  exits 143; resuming (spec.suspend: false) continues from that checkpoint, and it is no restart.
- a trainer killed mid-run (SIGKILL to its process, as a crash or the OOM killer does): no checkpoint on the way
  out; the Job retries the pod (status.restarts 1) and it resumes from the newest periodic checkpoint.
- distributed.nodes: 2: an Indexed Job whose pods meet at `<job>-0.<service>.<namespace>.svc` (cluster DNS),
  two ranks each taking half of every global batch, give the 1-node losses.

Nothing is mocked. Waits poll with a deadline and fail showing the status as it is; the steps the scenarios act
on are read from status.progress (the operator's scrape of the live trainer), never from a clock.
"""

from __future__ import annotations

import json
import uuid

import pytest
from controlplane import ControlPlane
from real_training import PodWatch, checkpoints, losses, quickstart_on_node, quickstart_volumes
from scenario import apply, children, condition, events, get_ftj, running_operator, wait_phase, wait_status

pytestmark = pytest.mark.trainer_image

STEPS = 150  # long enough to interrupt mid-run on an idle machine too (60 steps took 11 s of training there)
# A global batch of 16 in two micro-batches of 8: one rank accumulates both, two ranks take one each.
TRAINING = {"maxSteps": STEPS, "logEverySteps": 1, "microBatchSize": 8, "globalBatchSize": 16}
OUTPUT = {"saveEverySteps": 10, "keepLastCheckpoints": 2}
TRAIN_TIMEOUT = 900  # a CPU run on a loaded CI machine: generous, and the failure shows where it stood


def training_job(name: str, namespace: str, node: str, image: str, **spec) -> dict:
    job = quickstart_on_node(name, namespace, node, image, **TRAINING)
    job["spec"]["output"] |= OUTPUT
    job["spec"] |= spec
    return job


def step_of(obj: dict) -> int:
    """The step status.progress shows; an AssertionError (ends a wait at once) if the run already finished."""
    phase = (obj.get("status") or {}).get("phase")
    assert phase not in ("Succeeded", "Failed"), f"the run ended ({phase}) before it could be interrupted"
    return ((obj.get("status") or {}).get("progress") or {}).get("step") or 0


def logs(cp: ControlPlane, namespace: str, pod: str) -> str:
    res = cp.kubectl("logs", pod, "-n", namespace)
    return res.stdout + res.stderr


def finished(cp: ControlPlane, name: str, namespace: str) -> dict:
    """The FineTuneJob once Succeeded; a failure or a timeout shows the status and the pods' logs."""
    obj = wait_status(cp, name, namespace, lambda o: (o.get("status") or {}).get("phase") in ("Succeeded", "Failed"),
                      "training to finish", timeout=TRAIN_TIMEOUT)
    if obj["status"]["phase"] != "Succeeded":
        tails = {p["metadata"]["name"]: logs(cp, namespace, p["metadata"]["name"])[-2000:]
                 for p in children(cp, namespace, name)["pods"]}
        raise AssertionError(f"{name} failed: {json.dumps(obj['status'], indent=1)}\n{json.dumps(tails, indent=1)}")
    return obj


def assert_same_run(obj: dict, run, reference: dict) -> None:
    """`obj`'s result and the volume's run folder `run` hold the reference run's losses, each step once."""
    result, manifest = obj["status"]["result"], json.loads((run / "manifest.json").read_text())
    assert result["steps"] == STEPS and manifest["metrics"]["steps"] == STEPS, (result, manifest["metrics"])
    assert result["finalLoss"] == pytest.approx(reference["finalLoss"], rel=1e-4), (result, reference)
    assert manifest["metrics"]["final_loss"] == pytest.approx(reference["finalLoss"], rel=1e-4)
    curve = losses(run)
    assert sorted(curve) == list(range(1, STEPS + 1)), f"each step logged once: {sorted(curve)}"
    for step, loss in curve.items():
        assert loss == pytest.approx(reference["losses"][step], rel=1e-4), (step, loss, reference["losses"][step])


@pytest.fixture(scope="module")
def reference(cp, real_node, trainer_on_node, quickstart_model, tmp_path_factory) -> dict:
    """One uninterrupted 1-node run of the scenarios' spec: its status.result and its loss at every step."""
    namespace = cp.create_namespace(f"t-{uuid.uuid4().hex[:8]}",
                                    labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        out = quickstart_volumes(cp, namespace, tmp_path_factory.mktemp("reference"), quickstart_model)
        with running_operator(cp):
            assert apply(cp, training_job("ref", namespace, real_node.name, trainer_on_node)).returncode == 0
            obj = finished(cp, "ref", namespace)
        result = obj["status"]["result"]
        assert result["steps"] == STEPS and sorted(losses(out / "run")) == list(range(1, STEPS + 1)), result
        return {"finalLoss": result["finalLoss"], "losses": losses(out / "run")}
    finally:
        cp.kubectl("delete", "namespace", namespace, "--wait=false")


def test_suspend_mid_run_checkpoints_on_sigterm_and_resume_reaches_the_same_loss(
        cp, operator, namespace, real_node, trainer_on_node, quickstart_model, tmp_path, reference):
    run = quickstart_volumes(cp, namespace, tmp_path, quickstart_model) / "run"
    with PodWatch(cp, namespace, "sus") as watch:
        assert apply(cp, training_job("sus", namespace, real_node.name, trainer_on_node)).returncode == 0
        # past the first periodic checkpoint (step 10) and a few steps more: the SIGTERM checkpoint keeps them
        wait_status(cp, "sus", namespace, lambda o: step_of(o) >= 13, "training past step 13", TRAIN_TIMEOUT)
        res = cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
        assert res.returncode == 0, res.stderr
        obj = wait_phase(cp, "sus", namespace, "Suspended", timeout=120)
        assert "resume from the last checkpoint" in condition(obj, "Suspended")["message"]
        (pod, ended), = watch.wait_ended("the suspended pod's trainer to end").items()
        wait_status(cp, "sus", namespace, lambda o: not children(cp, namespace, "sus")["pods"],
                    "the suspended pod to be gone", 120)
    # the trainer saved where it stood (exit 143: preempted, not failed), and nothing was finished yet
    assert ended["exitCode"] == 143, ended
    assert json.loads(ended["message"])["outcome"] == "Preempted", ended
    stopped = checkpoints(run)[-1]
    assert max(losses(run)) == stopped and 13 <= stopped < STEPS, (stopped, sorted(losses(run)))  # no step lost
    assert not (run / "manifest.json").exists()

    res = cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    assert res.returncode == 0, res.stderr
    obj = finished(cp, "sus", namespace)
    (resumed,) = children(cp, namespace, "sus")["pods"]
    assert resumed["metadata"]["name"] != pod
    text = logs(cp, namespace, resumed["metadata"]["name"])
    assert f"resuming from checkpoint step-{stopped:08d} (step {stopped} of {STEPS})" in text, text[-3000:]
    assert_same_run(obj, run, reference)
    assert not obj["status"].get("restarts"), obj["status"]  # a suspension is not a failure
    assert "Restarting" not in [e["reason"] for e in events(cp, "sus", namespace)]


def test_killed_trainer_is_retried_and_resumes_from_the_last_checkpoint(
        cp, operator, namespace, real_node, trainer_on_node, quickstart_model, tmp_path, reference):
    run = quickstart_volumes(cp, namespace, tmp_path, quickstart_model) / "run"
    with PodWatch(cp, namespace, "kill") as watch:
        assert apply(cp, training_job("kill", namespace, real_node.name, trainer_on_node)).returncode == 0
        # trained past a checkpoint: the steps since it are lost with the process and trained again
        wait_status(cp, "kill", namespace,
                    lambda o: step_of(o) > 10 and checkpoints(run) and step_of(o) > checkpoints(run)[-1],
                    "training past its first checkpoint", TRAIN_TIMEOUT)
        (pod,) = children(cp, namespace, "kill")["pods"]
        real_node.kill(pod["status"]["containerStatuses"][0]["containerID"])
        name = pod["metadata"]["name"]
        ended = watch.wait_ended(f"pod {name}'s trainer to end", name)[name]
        kept = checkpoints(run)[-1]  # the newest checkpoint the killed process completed
        obj = finished(cp, "kill", namespace)
    assert ended["exitCode"] == 137, ended  # SIGKILL: no SIGTERM handler ran, nothing was saved on the way out
    pods = {p["metadata"]["name"]: p for p in children(cp, namespace, "kill")["pods"]}
    assert len(pods) == 2 and pods[name]["status"]["phase"] == "Failed", list(pods)
    (retry,) = [n for n in pods if n != name]
    text = logs(cp, namespace, retry)
    assert f"resuming from checkpoint step-{kept:08d} (step {kept} of {STEPS})" in text, text[-3000:]
    assert obj["status"]["restarts"] == 1, obj["status"]
    cols = cp.kubectl("get", "ftj", "kill", "-n", namespace, "-o", "wide", "--no-headers").stdout.split()
    # NAME PHASE PROGRESS LOSS (ETA: none once finished) STEP RESTARTS
    assert (cols[1], cols[2], cols[4], cols[5]) == ("Succeeded", "100%", str(STEPS), "1"), cols
    reasons = [e["reason"] for e in events(cp, "kill", namespace)]
    # Running, then Restarting while the Job replaces the pod, then Running again: never back to Pending (the one
    # Pending is the job's first; Events carry whole seconds, so its order against the first Running may tie)
    assert "Restarting" in reasons and reasons.count("Pending") <= 1 and reasons.count("Running") == 2, reasons
    assert_same_run(obj, run, reference)


def test_two_node_cpu_job_meets_through_cluster_dns_and_trains_to_the_one_node_loss(
        cp, operator, namespace, real_node, trainer_on_node, quickstart_model, tmp_path, reference):
    run = quickstart_volumes(cp, namespace, tmp_path, quickstart_model) / "run"
    job = training_job("two", namespace, real_node.name, trainer_on_node,
                       distributed={"nodes": 2, "gpusPerNode": 0},
                       resources={"cpu": "500m", "memory": "3Gi", "sharedMemory": "256Mi"})  # both fit on one node
    assert apply(cp, job).returncode == 0
    obj = finished(cp, "two", namespace)
    pods = sorted(children(cp, namespace, "two")["pods"],
                  key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"])
    assert [p["spec"]["nodeName"] for p in pods] == [real_node.name] * 2
    assert [p["status"]["phase"] for p in pods] == ["Succeeded"] * 2
    # rank 0 is found by its name under the headless Service, which only cluster DNS answers
    launch = json.loads(cp.get_json("configmap", "-n", namespace, "-l", "finetune.io/job-name=two")
                        ["items"][0]["data"]["launch.json"])
    rank0 = pods[0]["spec"]
    assert launch["worldSize"] == 2, launch
    assert launch["rendezvous"].split(":")[0] == f"{rank0['hostname']}.{rank0['subdomain']}.{namespace}.svc", launch
    assert obj["status"]["result"]["steps"] == STEPS
    assert_same_run(obj, run, reference)
