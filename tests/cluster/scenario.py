"""What the operator's cluster scenarios share: the CRD, the operator (in a thread, or as a process that can be
SIGKILLed), FineTuneJob manifests, and reads of what a user sees with kubectl (status, conditions, events, children).

Waits poll the API with a deadline, never fixed sleeps. Pod behaviour (held Running, failing, waiting) comes from
pod_behaviour.py, so the scenarios run unchanged on kwok and on a real pod runner.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from controlplane import ControlPlane, _die_with_parent, wait_for
from kopf.testing import KopfRunner

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetunejobs.finetune.io.yaml"
OPERATOR_ENV = {"FINETUNE_RESYNC_SECONDS": "2", "FINETUNE_OPERATOR_METRICS_PORT": "0",
                "FINETUNE_WATCH_TIMEOUT": "30", "FINETUNE_HANDLER_BACKOFF": "1",
                "FINETUNE_TRAINER_IMAGE": "registry.invalid/finetune/trainer:test",
                "FINETUNE_PROGRESS_TIMEOUT": "0.2"}
CHILD_KINDS = ("serviceaccounts", "configmaps", "services", "jobs", "persistentvolumeclaims", "pods")


def install_crd(cp: ControlPlane) -> None:
    res = cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    assert res.returncode == 0, res.stderr

    def established():  # (`kubectl wait` errors out while the new CRD has no status yet)
        crd = cp.get_json("crd", "finetunejobs.finetune.io") or {}
        return any(c["type"] == "Established" and c["status"] == "True"
                   for c in (crd.get("status") or {}).get("conditions") or [])

    wait_for(established, 60, "the FineTuneJob CRD to be established")


@contextlib.contextmanager
def running_operator(cp: ControlPlane, kubeconfig: Path | None = None, env: dict | None = None):
    """The operator (the `finetune-operator` handlers) in a thread, with this control plane's kubeconfig."""
    wanted = OPERATOR_ENV | (env or {}) | {"KUBECONFIG": str(kubeconfig or cp.kubeconfig)}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
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


class OperatorProcess:
    """The `finetune-operator` console script as a process of its own: started, SIGKILLed, restarted."""

    def __init__(self, cp: ControlPlane, kubeconfig: Path | None = None, env: dict | None = None,
                 log: Path | None = None):
        self.cp, self.kubeconfig = cp, kubeconfig or cp.kubeconfig
        self.env = dict(os.environ) | OPERATOR_ENV | (env or {}) | {"KUBECONFIG": str(self.kubeconfig)}
        self.log = log or cp.logs / "operator.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "OperatorProcess":
        exe = REPO / ".venv" / "bin" / "finetune-operator"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "finetune_operator.main"]
        self.starts += 1
        with open(self.log, "a") as log:
            log.write(f"--- start {self.starts}\n")
            self.proc = subprocess.Popen([*cmd, "--liveness", ""], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent)  # never outlives the test or benchmark
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no last write - what an OOM kill or a node loss does to the operator."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> "OperatorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


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


def wait_status(cp: ControlPlane, name: str, namespace: str, check, what: str, timeout: float = 90) -> dict:
    """Wait until `check(ftj)` is truthy; on timeout the error shows the status as it is."""
    def probe():
        obj = get_ftj(cp, name, namespace) or {}
        return obj if check(obj) else None

    try:
        return wait_for(probe, timeout, f"FineTuneJob {namespace}/{name}: {what}")
    except TimeoutError as e:
        obj = get_ftj(cp, name, namespace) or {}
        raise AssertionError(f"{e}; status now: {json.dumps(obj.get('status'), indent=1)}") from None


def wait_phase(cp: ControlPlane, name: str, namespace: str, phase: str, timeout: float = 90) -> dict:
    return wait_status(cp, name, namespace, lambda o: (o.get("status") or {}).get("phase") == phase,
                       f"phase {phase}", timeout)


def condition(obj: dict, ctype: str) -> dict | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == ctype), None)


def events(cp: ControlPlane, name: str, namespace: str) -> list[dict]:
    res = cp.get_json("events", "-n", namespace, "--field-selector",
                      f"involvedObject.kind=FineTuneJob,involvedObject.name={name}")
    # Events carry whole seconds; within one, the order they were written (the operator posts each once, so its
    # resourceVersion is its creation's) breaks the tie
    return sorted(res["items"], key=lambda e: (e.get("lastTimestamp") or "",
                                               int(e["metadata"].get("resourceVersion") or 0))) if res else []


def children(cp: ControlPlane, namespace: str, name: str) -> dict[str, list[dict]]:
    """Every kind the operator creates, by kind, selected by the `finetune.io/job-name` label."""
    out = {}
    for kind in CHILD_KINDS:
        out[kind] = cp.get_json(kind, "-n", namespace, "-l", f"finetune.io/job-name={name}")["items"]
    return out


def uids(kids: dict[str, list[dict]], skip=("pods",)) -> dict[str, list[str]]:
    """The uids of each kind of child (to compare before and after: a recreated child has a new uid)."""
    return {k: sorted(o["metadata"]["uid"] for o in v) for k, v in kids.items() if k not in skip}


def provide_volume(cp: ControlPlane, namespace: str, claim: str, size: str = "100Gi") -> None:
    """A PersistentVolume reserved for claim `namespace/claim`: the storage a real cluster's provisioner would give
    (nothing here provisions volumes; kwok never mounts it)."""
    cp.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"pv-{namespace}-{claim}"},
              "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
                       "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                       "hostPath": {"path": f"/tmp/pv/{namespace}/{claim}"},
                       "claimRef": {"namespace": namespace, "name": claim}}})
