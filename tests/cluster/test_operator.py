"""The operator on the real control plane: each scenario asserts what a user sees with kubectl.

The operator runs for real (kopf, in a thread via KopfRunner) against kube-apiserver, controller-manager,
scheduler and kwok GPU nodes. Waits poll the API with a deadline, never fixed sleeps. GPU-consuming scenarios
get a node of their own (`add_gpu_node`), so they do not compete with each other for the 2 GPUs of gpu-node-0.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from pathlib import Path

import yaml
import pytest
from controlplane import CHAOS_FAIL_LABEL, ControlPlane, wait_for
from kopf.testing import KopfRunner

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetunejobs.finetune.io.yaml"
OPERATOR_ENV = {"FINETUNE_RESYNC_SECONDS": "2", "FINETUNE_OPERATOR_METRICS_PORT": "0",
                "FINETUNE_WATCH_TIMEOUT": "30", "FINETUNE_HANDLER_BACKOFF": "1",
                "FINETUNE_TRAINER_IMAGE": "registry.invalid/finetune/trainer:test",
                "FINETUNE_PROGRESS_TIMEOUT": "0.2"}


def install_crd(cp: ControlPlane) -> None:
    res = cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    assert res.returncode == 0, res.stderr
    res = cp.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.finetune.io", "--timeout=60s")
    assert res.returncode == 0, res.stderr


@contextlib.contextmanager
def running_operator(cp: ControlPlane):
    """The operator (the `finetune-operator` handlers) in a thread, with this control plane's kubeconfig."""
    saved = {k: os.environ.get(k) for k in [*OPERATOR_ENV, "KUBECONFIG"]}
    os.environ.update(OPERATOR_ENV | {"KUBECONFIG": str(cp.kubeconfig)})
    try:
        with KopfRunner(["run", "--standalone", "--all-namespaces", "-m", "finetune_operator.handlers"],
                        timeout=60) as runner:
            yield runner
        assert runner.exception is None, runner.output[-3000:]
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ftj(name: str, namespace: str, gpus=2, node: str | None = None, labels=None, annotations=None, **spec) -> dict:
    """A FineTuneJob whose paths are absolute (inside the image): nothing needs a PersistentVolume."""
    obj = {
        "apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}, "annotations": annotations or {}},
        "spec": {"model": {"path": "/opt/models/tiny"},
                 "dataset": {"paths": ["/opt/data/train.jsonl"], "format": "messages"},
                 "training": {"maxSteps": 10},
                 "distributed": {"gpusPerNode": gpus},
                 "resources": {"cpu": "1", "memory": "1Gi", "sharedMemory": "1Gi"},
                 "output": {"path": "/tmp/out"}},
    }
    if node:
        obj["spec"]["scheduling"] = {"nodeSelector": {"kubernetes.io/hostname": node}}
    obj["spec"] |= copy.deepcopy(spec)
    return obj


def apply(cp: ControlPlane, obj: dict):
    return cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))


def get_ftj(cp: ControlPlane, name: str, namespace: str) -> dict | None:
    return cp.get_json("finetunejob", name, "-n", namespace)


def wait_phase(cp: ControlPlane, name: str, namespace: str, phase: str, timeout: float = 90) -> dict:
    def check():
        obj = get_ftj(cp, name, namespace) or {}
        return obj if (obj.get("status") or {}).get("phase") == phase else None

    try:
        return wait_for(check, timeout, f"FineTuneJob {namespace}/{name} phase {phase}")
    except TimeoutError as e:
        obj = get_ftj(cp, name, namespace) or {}
        raise AssertionError(f"{e}; status now: {json.dumps(obj.get('status'), indent=1)}") from None


def condition(obj: dict, ctype: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == ctype), None)


def events(cp: ControlPlane, name: str, namespace: str) -> list[dict]:
    res = cp.get_json("events", "-n", namespace, "--field-selector",
                      f"involvedObject.kind=FineTuneJob,involvedObject.name={name}")
    return sorted(res["items"], key=lambda e: e.get("lastTimestamp") or "") if res else []


def children(cp: ControlPlane, namespace: str, name: str) -> dict[str, list[dict]]:
    """Every kind the operator creates, by kind, selected by the `finetune.io/job-name` label."""
    out = {}
    for kind in ("serviceaccounts", "configmaps", "services", "jobs", "persistentvolumeclaims", "pods"):
        out[kind] = cp.get_json(kind, "-n", namespace, "-l", f"finetune.io/job-name={name}")["items"]
    return out


CHAOS = "pod-container-running-failed.stage.kwok.x-k8s.io"
RUN_LONG = {CHAOS + "/delay": "10m", CHAOS + "/jitter-delay": "10m"}  # kwok keeps such pods Running for 10 min


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane) -> ControlPlane:
    install_crd(control_plane)
    return control_plane


@pytest.fixture
def operator(cp):
    with running_operator(cp) as runner:
        yield runner


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
    assert apply(cp, ftj("ok", namespace, node=own_node)).returncode == 0
    obj = wait_phase(cp, "ok", namespace, "Succeeded")
    st = obj["status"]
    assert condition(obj, "Succeeded")["status"] == "True"
    assert condition(obj, "Scheduled")["status"] == "True"
    assert condition(obj, "Running")["reason"] == "Completed"
    assert st["observedGeneration"] == obj["metadata"]["generation"]
    assert st["startTime"] and st["completionTime"]
    reasons = [e["reason"] for e in events(cp, "ok", namespace)]
    assert "Succeeded" in reasons, reasons
    pods = children(cp, namespace, "ok")["pods"]
    assert [p["spec"]["nodeName"] for p in pods] == [own_node]

    # The kubelet reports the trainer's termination message; kwok's fast stage writes none, so play that part.
    doc = {"outcome": "Succeeded", "steps": 10, "finalLoss": 0.5, "finalEvalLoss": None,
           "outputPath": "/tmp/out", "manifestSha256": "a" * 64}
    term = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"] | {"message": json.dumps(doc)}
    patch = {"status": {"containerStatuses": [pods[0]["status"]["containerStatuses"][0] | {"state": {"terminated": term}}]}}
    res = cp.kubectl("patch", "pod", pods[0]["metadata"]["name"], "-n", namespace, "--subresource=status",
                     "--type=merge", "-p", json.dumps(patch))
    assert res.returncode == 0, res.stderr

    def result():
        r = (get_ftj(cp, "ok", namespace)["status"]).get("result")
        return r if r and r.get("manifestSha256") else None

    r = wait_for(result, 30, "status.result from the termination message")
    assert r == {"outputPath": "/tmp/out", "manifestSha256": "a" * 64, "steps": 10, "finalLoss": 0.5}
    res = cp.kubectl("get", "ftj", "ok", "-n", namespace, "--no-headers")
    assert "Succeeded" in res.stdout and "100%" in res.stdout


def test_failing_pod_fails_the_job_with_the_trainers_reason(cp, operator, namespace, own_node):
    doc = {"outcome": "Failed", "reason": "DataError", "message": "/opt/data/train.jsonl:3: no messages key"}
    annotations = {CHAOS + "/exit-code": "2", CHAOS + "/reason": "Error",
                   CHAOS + "/message": "'" + json.dumps(doc) + "'", CHAOS + "/delay": "100ms", CHAOS + "/jitter-delay": "0s"}
    assert apply(cp, ftj("bad", namespace, node=own_node, labels={CHAOS_FAIL_LABEL: "true"},
                         annotations=annotations)).returncode == 0
    obj = wait_phase(cp, "bad", namespace, "Failed")
    c = condition(obj, "Failed")
    assert c["reason"] == "DataError" and "train.jsonl:3" in c["message"], c
    job = children(cp, namespace, "bad")["jobs"][0]
    assert len(children(cp, namespace, "bad")["pods"]) == 1  # exit code 2: no retries
    assert any(jc["type"] == "Failed" for jc in job["status"]["conditions"])
    warnings = [e for e in events(cp, "bad", namespace) if e["type"] == "Warning"]
    assert any("DataError" in e["message"] for e in warnings), warnings


def test_three_two_gpu_jobs_on_one_two_gpu_node_one_runs_others_say_why(cp, operator, namespace, own_node):
    for i in range(3):
        assert apply(cp, ftj(f"q{i}", namespace, node=own_node, labels={CHAOS_FAIL_LABEL: "true"},
                             annotations=RUN_LONG)).returncode == 0

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
        assert apply(cp, ftj("rs", namespace, node=own_node, labels={CHAOS_FAIL_LABEL: "true"},
                             annotations=RUN_LONG)).returncode == 0
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
    assert apply(cp, ftj("sus", namespace, node=own_node, labels={CHAOS_FAIL_LABEL: "true"},
                         annotations=RUN_LONG)).returncode == 0
    wait_phase(cp, "sus", namespace, "Running")
    res = cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}')
    assert res.returncode == 0, res.stderr
    obj = wait_phase(cp, "sus", namespace, "Suspended")
    assert "resume from the last checkpoint" in condition(obj, "Suspended")["message"]
    wait_for(lambda: not [p for p in children(cp, namespace, "sus")["pods"]
                          if p["status"].get("phase") in ("Pending", "Running")], 60, "pods stopped")
    res = cp.kubectl("patch", "ftj", "sus", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    assert res.returncode == 0, res.stderr
    wait_phase(cp, "sus", namespace, "Running")


def test_delete_ftj_removes_everything_it_owned(cp, operator, namespace, own_node):
    spec = ftj("gone", namespace, node=own_node, labels={CHAOS_FAIL_LABEL: "true"}, annotations=RUN_LONG)
    spec["spec"]["output"] = {"path": "run", "volume": {"create": {"size": "1Gi"}}}
    assert apply(cp, spec).returncode == 0
    wait_for(lambda: all(children(cp, namespace, "gone")[k] for k in
                         ("serviceaccounts", "configmaps", "services", "jobs", "persistentvolumeclaims", "pods")),
             60, "all children of gone")
    res = cp.kubectl("delete", "ftj", "gone", "-n", namespace, "--timeout=60s")
    assert res.returncode == 0, res.stderr
    wait_for(lambda: not any(children(cp, namespace, "gone").values()), 90,
             "the garbage collector to delete every child of gone")


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
