"""docs/user-guide.md's cluster commands, run as written, against the real control plane and the operator.

Each test takes a block of the guide by name and runs its lines verbatim in a shell (this clone's `finetune`,
the control plane's kubectl), in a kubeconfig whose context points at a fresh namespace - so `finetune submit
examples/...` lands there as it would in a user's current namespace. What the guide leaves to a cluster's admin
(storage for the data claim and the output claim) the test provides first; kwok plays the trainer pods.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from cli_process import cli_env
from controlplane import ControlPlane, wait_for
from pod_behaviour import runs_long
from scenario import get_ftj, install_crd, running_operator, wait_phase, wait_status

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.user_guide import blocks  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "cluster" / "lora-hub-1gpu.yaml"
NODE = "gpu-guide"


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane) -> ControlPlane:
    install_crd(control_plane)
    control_plane.add_gpu_node(NODE, gpus=8)
    yield control_plane
    control_plane.kubectl("delete", "node", NODE, "--wait=false")


@pytest.fixture(scope="module")
def operator(cp):
    with running_operator(cp) as runner:
        yield runner


@pytest.fixture
def shell(cp, tmp_path):
    """run(command) in a fresh namespace, as a user whose current context points there."""
    ns = cp.create_namespace(f"g-{uuid.uuid4().hex[:8]}")
    kubeconfig = tmp_path / "kubeconfig"
    doc = yaml.safe_load(cp.kubeconfig.read_text())
    doc["contexts"][0]["context"]["namespace"] = ns
    kubeconfig.write_text(yaml.safe_dump(doc))
    env = cli_env(cp, KUBECONFIG=str(kubeconfig))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # this venv's `finetune`

    def run(command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=timeout)

    run.namespace = ns
    yield run
    cp.kubectl("delete", "namespace", ns, "--wait=false")


def provide_volume(cp: ControlPlane, namespace: str, claim: str, create_claim: bool = False) -> None:
    """Storage a cluster admin provides: a PersistentVolume reserved for `namespace/claim` (and the claim)."""
    cp.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{namespace}-{claim}"},
              "spec": {"capacity": {"storage": "100Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                       "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                       "hostPath": {"path": f"/tmp/pv/{namespace}/{claim}"},
                       "claimRef": {"namespace": namespace, "name": claim}}})
    if create_claim:
        cp.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": claim, "namespace": namespace},
                  "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                           "resources": {"requests": {"storage": "10Gi"}}}})


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, f"{res.args}: exit {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


def test_the_local_commands_answer(cp, shell):
    for cmd in blocks()["local"].commands:
        ok(shell(cmd))
    out = ok(shell(blocks()["serving"].commands[0]))
    assert "vllm serve meta-llama/Llama-3.2-1B-Instruct --enable-lora" in out and "kind: InferenceService" in out


def test_submit_watch_list_status(cp, operator, shell):
    ns = shell.namespace
    provide_volume(cp, ns, "finetune-data", create_claim=True)
    provide_volume(cp, ns, "llama-lora-output")
    secret, submit, listing, status = blocks()["submit"].commands
    ok(shell(secret))
    out = ok(shell(submit))  # kwok's trainer finishes at once: --watch exits 0
    assert f"FineTuneJob {ns}/llama-lora created" in out and "Succeeded" in out
    rows = ok(shell(listing)).splitlines()
    assert rows[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "MODEL", "METHOD", "GPUS", "AGE"]
    assert rows[1].split()[:2] == ["llama-lora", "Succeeded"]
    assert rows[1].split()[2:5] == ["meta-llama/Llama-3.2-1B-Instruct", "lora", "1x1"]
    out = ok(shell(status))
    assert "Phase:      Succeeded" in out and "Conditions:" in out and "Events:" in out


def test_suspend_resume_delete(cp, operator, shell):
    ns = shell.namespace
    provide_volume(cp, ns, "finetune-data", create_claim=True)
    provide_volume(cp, ns, "llama-lora-output")
    job = runs_long().on(yaml.safe_load(EXAMPLE.read_text()))  # the guide's job, its trainer training for long
    job["metadata"]["namespace"] = ns
    cp.apply(job)
    wait_phase(cp, "llama-lora", ns, "Running")
    cancel, resume, delete = blocks()["suspend"].commands
    assert "suspended: its pods stop after saving a checkpoint" in ok(shell(cancel))
    wait_phase(cp, "llama-lora", ns, "Suspended")
    assert "resumed" in ok(shell(resume))
    wait_phase(cp, "llama-lora", ns, "Running")
    assert "deleted" in ok(shell(delete))
    wait_for(lambda: get_ftj(cp, "llama-lora", ns) is None, 60, "llama-lora deleted")


def test_an_output_claim_without_a_volume_is_named(cp, operator, shell):
    ns = shell.namespace  # nothing here provisions the output claim the operator creates (no StorageClass)
    ok(shell(blocks()["submit"].commands[0]))
    ok(shell(f"finetune submit {EXAMPLE.relative_to(REPO)}"))

    wait_status(cp, "llama-lora", ns, lambda o: any(
        c["type"] == "Scheduled" and c["reason"] == "PersistentVolumeClaimNotBound"
        for c in (o.get("status") or {}).get("conditions", [])), "llama-lora to wait for its claim")
    status, events, describe = blocks()["troubleshoot"].commands
    out = ok(shell(status))
    assert "PersistentVolumeClaimNotBound" in out and "(llama-lora-output)" in out and "StorageClass" in out, out
    assert "PersistentVolumeClaimNotBound" in ok(shell(events))
    assert "llama-lora-output" in ok(shell(describe))


def test_a_missing_priority_class_shows_in_the_events(cp, operator, shell):
    ns = shell.namespace
    provide_volume(cp, ns, "finetune-data", create_claim=True)
    provide_volume(cp, ns, "llama-lora-output")
    job = yaml.safe_load(EXAMPLE.read_text())
    job["metadata"]["namespace"] = ns
    job["spec"]["scheduling"] = {"priorityClassName": "no-such-class"}
    cp.apply(job)
    events = blocks()["troubleshoot"].commands[1]
    wait_for(lambda: "FailedCreate" in ok(shell(events)), 90, "the Job's FailedCreate event")
    assert "no PriorityClass with name no-such-class was found" in ok(shell(events))
