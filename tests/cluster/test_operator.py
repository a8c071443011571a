"""The operator on the real control plane: each scenario asserts what a user sees with kubectl.

The operator runs for real (kopf, in a thread via KopfRunner) against kube-apiserver, controller-manager,
scheduler and kwok GPU nodes. Waits poll the API with a deadline, never fixed sleeps. GPU-consuming scenarios
get a node of their own (`add_gpu_node`), so they do not compete with each other for the 2 GPUs of gpu-node-0.
"""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml
from controlplane import wait_for
from pod_behaviour import fails, finishes, runs_long
from real_training import quickstart_on_node, quickstart_volumes
from scenario import (CRD, REPO, apply, children, condition, events, ftj, get_ftj, running_operator,
                      wait_phase)

@pytest.fixture
def own_node(cp, request) -> str:
    """A fresh 2-GPU kwok node for one scenario (selected by kubernetes.io/hostname)."""
    name = "gpu-" + request.node.name.replace("_", "-")[5:40].strip("-").lower()
    cp.add_gpu_node(name, gpus=2)
    yield name
    cp.kubectl("delete", "node", name, "--wait=false")


def test_checked_in_crd_is_accepted_by_the_api_server(cp):
    res = cp.kubectl("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", str(CRD))
    assert res.returncode == 0, res.stderr


def test_every_example_creates_owned_children_with_hardened_gpu_pods(cp, operator, namespace):
    examples = sorted((REPO / "examples" / "cluster").glob("*.yaml"))
    assert examples
    # the one prerequisite of the examples that is not a volume: full-fsdp-2nodes.yaml's PriorityClass
    cp.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
              "metadata": {"name": "training-high"}, "value": 1000})
    for path in examples:
        res = cp.kubectl("apply", "-n", namespace, "-f", str(path))
        assert res.returncode == 0, f"{path.name}: {res.stderr}"
    for path in examples:
        doc = yaml.safe_load(path.read_text())
        name, spec = doc["metadata"]["name"], doc["spec"]
        owner = get_ftj(cp, name, namespace)
        uid = owner["metadata"]["uid"]
        nodes = spec.get("distributed", {}).get("nodes", 1)

        def complete():
            kids = children(cp, namespace, name)
            listed = all(kids[k] for k in ("serviceaccounts", "configmaps", "services", "jobs"))
            return kids if listed and len(kids["pods"]) == nodes else None  # lists may lag under load

        kids = wait_for(complete, 60, f"children and {nodes} pod(s) of {name}")
        for kind in ("serviceaccounts", "configmaps", "services", "jobs"):
            assert len(kids[kind]) == 1, (name, kind, [k["metadata"]["name"] for k in kids[kind]])
            refs = kids[kind][0]["metadata"]["ownerReferences"]
            assert [(r["kind"], r["uid"], r.get("controller")) for r in refs] == [("FineTuneJob", uid, True)]
        wants_pvc = "create" in (spec["output"].get("volume") or {})
        assert len(kids["persistentvolumeclaims"]) == int(wants_pvc), name
        job = kids["jobs"][0]
        assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == nodes
        for pod in kids["pods"]:
            ps = pod["spec"]
            c = ps["containers"][0]
            assert ps["securityContext"]["runAsNonRoot"] is True and ps["automountServiceAccountToken"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            assert c["command"][0] == "finetune-train"
            gpus = spec.get("distributed", {}).get("gpusPerNode", "auto")
            want = None if gpus == 0 else str(1 if gpus == "auto" else gpus)
            assert c["resources"]["limits"].get("nvidia.com/gpu") == want, name
            assert ps["subdomain"] == kids["services"][0]["metadata"]["name"]
        if "hfTokenSecretRef" in spec:
            env = {e["name"]: e for e in kids["pods"][0]["spec"]["containers"][0]["env"]}
            assert "secretKeyRef" in env["HF_TOKEN"]["valueFrom"]
        ftj_obj = get_ftj(cp, name, namespace)
        assert ftj_obj["status"]["phase"] == "Pending", (name, ftj_obj["status"])
    res = cp.kubectl("get", "ftj", "-n", namespace)
    assert res.returncode == 0 and "PHASE" in res.stdout and "llama-lora" in res.stdout


def test_job_runs_to_succeeded_with_conditions_events_and_result(cp, operator, namespace, own_node):
    doc = {"steps": 10, "finalLoss": 0.5, "outputPath": "/tmp/out", "manifestSha256": "a" * 64}
    assert apply(cp, finishes(after="1s", result=doc).on(ftj("ok", namespace, node=own_node))).returncode == 0
    obj = wait_phase(cp, "ok", namespace, "Succeeded")
    st = obj["status"]
    assert condition(obj, "Succeeded")["status"] == "True"
    assert condition(obj, "Scheduled")["status"] == "True"
    assert condition(obj, "Running")["reason"] == "Completed"
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["startTime"] and st["completionTime"]
    assert st["result"] == {"outputPath": "/tmp/out", "manifestSha256": "a" * 64, "steps": 10, "finalLoss": 0.5}
    assert (condition(obj, "ReadyToServe")["status"], condition(obj, "ReadyToServe")["reason"]) == ("True", "NoGate")
    reasons = [e["reason"] for e in events(cp, "ok", namespace)]
    # straight from Running to Succeeded: no "Pending" while the Job controller catches up with the finished pod
    assert [r for r in reasons if r in ("Pending", "Running", "Succeeded")][-2:] == ["Running", "Succeeded"], reasons
    assert reasons.count("Succeeded") == 1 and reasons.count("Running") == 1, reasons
    pods = children(cp, namespace, "ok")["pods"]
    assert [p["spec"]["nodeName"] for p in pods] == [own_node]
    res = cp.kubectl("get", "ftj", "ok", "-n", namespace, "--no-headers")
    assert "Succeeded" in res.stdout and "100%" in res.stdout


def test_a_result_that_misses_spec_serving_gate_is_not_ready_to_serve(cp, operator, namespace, own_node):
    doc = {"steps": 10, "finalLoss": 0.5, "finalEvalLoss": 1.61, "evalExactMatch": 0.12, "outputPath": "/tmp/out",
           "manifestSha256": "b" * 64}
    obj = finishes(after="1s", result=doc).on(ftj("gated", namespace, node=own_node, serving={
        "gate": {"maxEvalLoss": 1.2, "minExactMatch": 0.1}}, dataset={
        "paths": ["/opt/data/train.jsonl"], "format": "messages", "validationSplit": 0.1}))
    assert apply(cp, obj).returncode == 0
    obj = wait_phase(cp, "gated", namespace, "Succeeded")
    ready = condition(obj, "ReadyToServe")
    assert (ready["status"], ready["reason"]) == ("False", "GateFailed"), ready
    assert "eval loss 1.61 is not <= 1.2" in ready["message"] and "exact match 0.12 >= 0.1" in ready["message"], ready
    assert obj["status"]["result"]["evalExactMatch"] == 0.12
    warned = [e for e in events(cp, "gated", namespace) if e["reason"] == "GateFailed"]
    assert len(warned) == 1 and warned[0]["type"] == "Warning", warned


def test_failing_pod_fails_the_job_with_the_trainers_reason(cp, operator, namespace, own_node):
    doc = {"outcome": "Failed", "reason": "DataError", "message": "/opt/data/train.jsonl:3: no messages key"}
    assert apply(cp, fails(exit_code=2, message=json.dumps(doc)).on(ftj("bad", namespace, node=own_node))).returncode == 0
    obj = wait_phase(cp, "bad", namespace, "Failed")
    c = condition(obj, "Failed")
    assert c["reason"] == "DataError" and "train.jsonl:3" in c["message"], c
    job = children(cp, namespace, "bad")["jobs"][0]
    assert len(children(cp, namespace, "bad")["pods"]) == 1  # exit code 2: no retries
    assert any(jc["type"] == "Failed" for jc in job["status"]["conditions"])
    warnings = [e for e in events(cp, "bad", namespace) if e["type"] == "Warning"]
    assert any("DataError" in e["message"] for e in warnings), warnings


# Long enough for the operator (resync every 2 s here) to scrape a step mid-run: 40 steps trained in about 3 s on an
# idle machine and the check for live progress failed when no scrape fell inside them.
STEPS = 200


@pytest.mark.trainer_image
def test_job_trains_on_a_real_node_and_succeeds_with_the_result_of_its_output(
        cp, operator, namespace, real_node, trainer_on_node, quickstart_model, tmp_path):
    out = quickstart_volumes(cp, namespace, tmp_path, quickstart_model)
    job = quickstart_on_node("ok", namespace, real_node.name, trainer_on_node,
                             maxSteps=STEPS, evalEverySteps=STEPS // 2, logEverySteps=5)
    job["spec"]["output"] |= {"saveEverySteps": STEPS // 2}
    assert apply(cp, job).returncode == 0

    seen = []  # status.progress as the operator scraped it from the live trainer
    live = {}  # what `kubectl get ftj` and `kubectl logs` showed once, mid-run

    def succeeded():
        obj = get_ftj(cp, "ok", namespace) or {}
        st = obj.get("status") or {}
        step = (st.get("progress") or {}).get("step") or 0
        if st.get("phase") == "Running" and step:
            seen.append(st["progress"])
            if 6 <= step < STEPS and not live:  # past the first progress line (every 5 steps)
                pod = children(cp, namespace, "ok")["pods"][0]["metadata"]["name"]
                live.update(get=cp.kubectl("get", "ftj", "ok", "-n", namespace).stdout,
                            logs=cp.kubectl("logs", pod, "-n", namespace).stdout, progress=st["progress"])
        return obj if st.get("phase") in ("Succeeded", "Failed") else None

    obj = wait_for(succeeded, 600, "FineTuneJob ok to finish training", interval=0.5)
    st = obj["status"]
    pods = children(cp, namespace, "ok")["pods"]
    logs = cp.kubectl("logs", pods[0]["metadata"]["name"], "-n", namespace)
    assert st["phase"] == "Succeeded", (json.dumps(st, indent=1), logs.stdout[-3000:])
    assert condition(obj, "Succeeded")["status"] == "True"
    assert condition(obj, "Running")["reason"] == "Completed"
    assert st["observedGeneration"] == obj["metadata"]["generation"] and st["startTime"] and st["completionTime"]
    reasons = [e["reason"] for e in events(cp, "ok", namespace)]
    # straight from Running to Succeeded, as on kwok: no "Pending" while the Job controller sees the real pod end
    assert [r for r in reasons if r in ("Pending", "Running", "Succeeded")][-2:] == ["Running", "Succeeded"], reasons
    assert reasons.count("Succeeded") == 1 and reasons.count("Running") == 1, reasons
    assert [p["spec"]["nodeName"] for p in pods] == [real_node.name]

    # the result comes from the trainer's termination message and names what is on the volume
    run = out / "run"
    r = st["result"]
    assert r["outputPath"] == "/mnt/output/run" and r["steps"] == STEPS
    assert r["manifestSha256"] == hashlib.sha256((run / "manifest.json").read_bytes()).hexdigest()
    manifest = json.loads((run / "manifest.json").read_text())
    adapter = run / "adapter_model.safetensors"
    assert manifest["files"]["adapter_model.safetensors"]["sha256"] == hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert r["finalLoss"] == pytest.approx(manifest["metrics"]["final_loss"])
    # what the user watched: live progress in `kubectl get ftj`, the trainer's lines in `kubectl logs`
    assert seen and all(p["totalSteps"] == STEPS for p in seen), seen
    assert live, f"the operator never reported a step between 6 and {STEPS - 1} while the trainer ran: {seen}"
    mid = live["progress"]
    assert mid["loss"] > 0 and mid["etaSeconds"] >= 0 and mid["percent"] == f"{100 * mid['step'] // STEPS}%", mid
    row = live["get"].splitlines()[1].split()  # NAME PHASE PROGRESS LOSS ETA AGE, a moment after `mid`
    assert row[1] == "Running" and row[2].endswith("%") and float(row[3]) > 0, live["get"]
    assert re.fullmatch(r"(\d+h\d\dm|\d+m\d\ds|\d+s)", row[4]), live["get"]
    assert f"step 5/{STEPS} loss" in live["logs"], live["logs"][-2000:]
    assert logs.returncode == 0 and f"step {STEPS}/{STEPS} loss" in logs.stdout, logs.stdout[-2000:]
    res = cp.kubectl("get", "ftj", "ok", "-n", namespace, "--no-headers")
    assert "Succeeded" in res.stdout and "100%" in res.stdout


@pytest.mark.trainer_image
def test_bad_data_fails_the_job_with_the_file_and_line_and_no_retry(
        cp, operator, namespace, real_node, trainer_on_node, quickstart_model, tmp_path):
    quickstart_volumes(cp, namespace, tmp_path, quickstart_model, bad_line=3)
    assert apply(cp, quickstart_on_node("bad", namespace, real_node.name, trainer_on_node, maxSteps=5)).returncode == 0
    obj = wait_phase(cp, "bad", namespace, "Failed", timeout=300)
    c = condition(obj, "Failed")
    assert c["reason"] == "DataError" and "train.jsonl:3" in c["message"], c
    job = children(cp, namespace, "bad")["jobs"][0]
    pods = children(cp, namespace, "bad")["pods"]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]  # exit code 2: no retries
    assert pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 2
    assert any(jc["type"] == "Failed" for jc in job["status"]["conditions"])
    warnings = [e for e in events(cp, "bad", namespace) if e["type"] == "Warning"]
    assert any("DataError" in e["message"] for e in warnings), warnings


def test_three_two_gpu_jobs_on_one_two_gpu_node_one_runs_others_say_why(cp, operator, namespace, own_node):
    for i in range(3):
        assert apply(cp, runs_long().on(ftj(f"q{i}", namespace, node=own_node))).returncode == 0

    def settled():
        objs = [get_ftj(cp, f"q{i}", namespace) for i in range(3)]
        phases = sorted((o.get("status") or {}).get("phase") or "" for o in objs)
        waiting = [o for o in objs if (condition(o, "Scheduled") or {}).get("reason") == "Unschedulable"]
        return objs if phases == ["Pending", "Pending", "Running"] and len(waiting) == 2 else None

    objs = wait_for(settled, 90, "one Running and two Unschedulable FineTuneJobs")
    for o in objs:
        if o["status"]["phase"] == "Pending":
            msg = condition(o, "Scheduled")["message"]
            assert "2 nvidia.com/gpu" in msg and "Insufficient nvidia.com/gpu" in msg, msg
            assert any(e["reason"] == "Unschedulable" for e in events(cp, o["metadata"]["name"], namespace))
    res = cp.kubectl("get", "ftj", "-n", namespace, "--no-headers")
    assert res.stdout.count("Running") == 1 and res.stdout.count("Pending") == 2, res.stdout


def test_operator_restart_creates_no_duplicates_and_status_converges(cp, namespace, own_node):
    with running_operator(cp):
        assert apply(cp, runs_long().on(ftj("rs", namespace, node=own_node))).returncode == 0
        wait_phase(cp, "rs", namespace, "Running")
    before = {k: sorted(o["metadata"]["uid"] for o in v) for k, v in children(cp, namespace, "rs").items()}
    # While the operator is down, the status goes stale (someone overwrote it).
    res = cp.kubectl("patch", "ftj", "rs", "-n", namespace, "--subresource=status", "--type=merge",
                     "-p", json.dumps({"status": {"phase": "Pending", "message": "stale"}}))
    assert res.returncode == 0, res.stderr
    with running_operator(cp):
        obj = wait_phase(cp, "rs", namespace, "Running", timeout=60)
        after = {k: sorted(o["metadata"]["uid"] for o in v) for k, v in children(cp, namespace, "rs").items()}
    assert after == before
    assert all(len(v) == 1 for k, v in after.items() if k != "persistentvolumeclaims")
    assert obj["status"]["message"] != "stale"


def test_suspend_stops_pods_and_resume_starts_them_again(cp, operator, namespace, own_node):
    assert apply(cp, runs_long().on(ftj("sus", namespace, node=own_node))).returncode == 0
    wait_phase(cp, "sus", namespace, "Running")
    res = cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    assert res.returncode == 0, res.stderr
    obj = wait_phase(cp, "sus", namespace, "Suspended")
    assert "resume from the last checkpoint" in condition(obj, "Suspended")["message"]
    wait_for(lambda: not [p for p in children(cp, namespace, "sus")["pods"]
                          if p["status"].get("phase") in ("Pending", "Running")], 60, "pods stopped")
    res = cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    assert res.returncode == 0, res.stderr
    obj = wait_phase(cp, "sus", namespace, "Running")
    assert not obj["status"].get("restarts"), obj["status"]  # a suspension is not a failure
    assert "Restarting" not in [e["reason"] for e in events(cp, "sus", namespace)]


@pytest.mark.parametrize("when_deleted", ["Retain", "Delete"])
def test_delete_ftj_removes_what_it_owned_and_keeps_the_weights_unless_asked(cp, operator, namespace, own_node,
                                                                              when_deleted):
    spec = runs_long().on(ftj("gone", namespace, node=own_node))
    spec["spec"]["output"] = {"path": "run", "volume": {"create": {"size": "1Gi", "whenDeleted": when_deleted}}}
    assert apply(cp, spec).returncode == 0
    wait_for(lambda: all(children(cp, namespace, "gone")[k] for k in
                         ("serviceaccounts", "configmaps", "services", "jobs", "persistentvolumeclaims", "pods")),
             60, "all children of gone")
    claim = children(cp, namespace, "gone")["persistentvolumeclaims"][0]["metadata"]["uid"]
    res = cp.kubectl("delete", "ftj", "gone", "-n", namespace, "--timeout=60s")
    assert res.returncode == 0, res.stderr
    keep = when_deleted == "Retain"
    wait_for(lambda: not any(v for k, v in children(cp, namespace, "gone").items()
                             if k != "persistentvolumeclaims" or not keep), 90,
             "the garbage collector to delete every owned child of gone")
    left = children(cp, namespace, "gone")["persistentvolumeclaims"]
    if keep:  # the trained weights stay; a new job of the same name picks the claim up again
        assert [c["metadata"]["uid"] for c in left] == [claim]
        assert apply(cp, spec).returncode == 0
        wait_for(lambda: children(cp, namespace, "gone")["jobs"], 60, "the new job's Job")
        assert [c["metadata"]["uid"] for c in children(cp, namespace, "gone")["persistentvolumeclaims"]] == [claim]
        assert (get_ftj(cp, "gone", namespace)["status"].get("phase")) != "Failed"
    else:
        wait_for(lambda: not children(cp, namespace, "gone")["persistentvolumeclaims"], 60, "the claim to go")


def test_spec_edit_after_start_is_refused_naming_the_field(cp, operator, namespace):
    assert apply(cp, ftj("frozen", namespace, gpus=0)).returncode == 0
    wait_for(lambda: children(cp, namespace, "frozen")["jobs"], 60, "Job of frozen")
    res = cp.kubectl("patch", "ftj", "frozen", "-n", namespace, "--type=merge",
                     "-p", '{"spec":{"training":{"learningRate":0.1}}}')
    assert res.returncode != 0
    assert "spec.training" in res.stderr and "immutable" in res.stderr, res.stderr


def test_invalid_spec_is_refused_by_the_api_server_naming_the_field(cp, namespace):
    bad_range = ftj("bad1", namespace, training={"learningRate": 5})
    res = apply(cp, bad_range)
    assert res.returncode != 0 and "spec.training.learningRate" in res.stderr, res.stderr
    both = ftj("bad2", namespace, model={"path": "/m", "hubId": "org/m"})
    res = apply(cp, both)
    assert res.returncode != 0 and "spec.model.path" in res.stderr and "exactly one" in res.stderr, res.stderr
    typo = ftj("bad3", namespace, trainig={"maxSteps": 1})
    res = cp.kubectl("apply", "--validate=strict", "-f", "-", input=yaml.safe_dump(typo))
    assert res.returncode != 0 and "trainig" in res.stderr, res.stderr
    assert get_ftj(cp, "bad1", namespace) is None
