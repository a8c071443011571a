"""Training for real on the real node (node.py): the quickstart as a FineTuneJob whose model, data and output are
folders of this machine (hostPath PersistentVolumes, as a cluster admin provisions static volumes), and what a
user reads back: pods' final states as `kubectl get pods -w` shows them, logs, the volume's history.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import yaml
from controlplane import ControlPlane, wait_for
from finetune_operator.workload import TRAINER_UID
from node import pod_placement

REPO = Path(__file__).resolve().parents[2]


def host_volume(cp: ControlPlane, namespace: str, claim: str, path: Path, read_only: bool = False) -> str:
    """A PersistentVolumeClaim bound to a folder of this machine (a hostPath PersistentVolume reserved for it),
    as a cluster admin provisions static volumes; pods on the real node see the folder itself."""
    mode = "ReadOnlyMany" if read_only else "ReadWriteOnce"
    pv = f"{namespace}-{claim}"
    cp.apply({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
              "spec": {"capacity": {"storage": "1Gi"}, "accessModes": [mode], "storageClassName": "",
                       "hostPath": {"path": str(path), "type": "Directory"},
                       "claimRef": {"namespace": namespace, "name": claim}}})
    cp.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": namespace},
              "spec": {"accessModes": [mode], "storageClassName": "", "volumeName": pv,
                       "resources": {"requests": {"storage": "1Gi"}}}})
    return claim


def quickstart_on_node(name: str, namespace: str, node: str, image: str, **training) -> dict:
    """examples/quickstart/job.yaml as a FineTuneJob for the real node: model and data from the `inputs` claim,
    output to the `output` claim, CPU only, the trainer image given."""
    doc = yaml.safe_load((REPO / "examples" / "quickstart" / "job.yaml").read_text())
    spec = doc["spec"]
    spec["model"] = {"path": "model", "volume": {"claimName": "inputs"}}
    spec["dataset"] |= {"paths": ["data/train.jsonl"], "validationPaths": ["data/validation.jsonl"],
                        "volume": {"claimName": "inputs"}}
    spec["output"] |= {"path": "run", "volume": {"claimName": "output"}}
    spec["training"] |= training
    spec |= {"image": image, "distributed": {"gpusPerNode": 0},
             "resources": {"cpu": "1", "memory": "4Gi", "sharedMemory": "256Mi"},
             "scheduling": pod_placement(node)}
    doc["metadata"] = {"name": name, "namespace": namespace}
    return doc


def quickstart_volumes(cp: ControlPlane, namespace: str, tmp: Path, model: Path, bad_line: int | None = None) -> Path:
    """The claims `inputs` (the model and the quickstart's data; line `bad_line` of train.jsonl broken if given)
    and `output` (empty, writable by the trainer's uid), on folders under `tmp`; the output folder."""
    inputs, out = tmp / "inputs", tmp / "output"
    shutil.copytree(model, inputs / "model")
    shutil.copytree(REPO / "examples" / "quickstart" / "data", inputs / "data")
    if bad_line is not None:
        train = inputs / "data" / "train.jsonl"
        rows = train.read_text().splitlines()
        rows[bad_line - 1] = '{"conversation": []}'
        train.write_text("\n".join(rows) + "\n")
    for p in [inputs, *inputs.rglob("*")]:  # readable by the trainer's uid, as a shared volume would be
        p.chmod(0o755 if p.is_dir() else 0o644)
    out.mkdir()
    os.chown(out, TRAINER_UID, TRAINER_UID)  # a fresh volume the trainer (uid 1000) may write
    host_volume(cp, namespace, "inputs", inputs, read_only=True)
    host_volume(cp, namespace, "output", out)
    return out


def history(out: Path) -> list[dict]:
    """The rows of the run's metrics.jsonl on the output volume (one per logged step or evaluation)."""
    f = out / "metrics.jsonl"
    return [json.loads(r) for r in f.read_text().splitlines() if r.strip()] if f.exists() else []


def losses(out: Path) -> dict[int, float]:
    """Training loss by step, from the volume's history."""
    return {r["step"]: r["loss"] for r in history(out) if "loss" in r}


def checkpoints(out: Path) -> list[int]:
    """The steps of the complete checkpoints on the volume, oldest first."""
    d = out / "checkpoints"
    return sorted(int(p.name[5:]) for p in d.glob("step-*") if (p / "checkpoint.json").exists()) if d.is_dir() else []


class PodWatch:
    """`kubectl get pods -w` on one FineTuneJob's pods (or those `selector` selects), in the background: every pod's
    first container as it ended (exit code, reason, termination message), even for a pod deleted right after
    (suspend deletes them)."""

    def __init__(self, cp: ControlPlane, namespace: str, job: str = "", selector: str = ""):
        self.cmd = [str(cp.bin_dir / "kubectl"), "get", "pods", "-n", namespace, "-l",
                    selector or f"finetune.io/job-name={job}", "--watch", "-o", "json"]
        self.env = cp.env
        self.ended: dict[str, dict] = {}  # pod name -> containerStatuses[0].state.terminated
        self.seen: list[str] = []  # pod names in the order they appeared
        self._lock = threading.Lock()

    def __enter__(self) -> "PodWatch":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=self.env)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def _read(self) -> None:
        dec, buf = json.JSONDecoder(), ""
        for line in self.proc.stdout:
            buf += line
            try:
                obj, end = dec.raw_decode(buf.lstrip())
            except ValueError:
                continue
            buf = buf.lstrip()[end:]
            self._record(obj)

    def _record(self, pod: dict) -> None:
        name = pod["metadata"]["name"]
        with self._lock:
            if name not in self.seen:
                self.seen.append(name)
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if "terminated" in (cs.get("state") or {}):
                    self.ended.setdefault(name, cs["state"]["terminated"])

    def snapshot(self) -> tuple[list[str], dict[str, dict]]:
        with self._lock:
            return list(self.seen), dict(self.ended)

    def wait_ended(self, what: str, name: str | None = None, timeout: float = 120) -> dict[str, dict]:
        """{pod: terminated state} once pod `name` (any pod if None) has ended; a timeout shows the pods' states."""
        def ended():
            states = self.snapshot()[1]
            return states if (states.get(name) if name else states) else None

        try:
            return wait_for(ended, timeout, what)
        except TimeoutError as e:
            pods = subprocess.run([*self.cmd[:self.cmd.index("--watch")], "-o", "json"], capture_output=True,
                                  text=True, env=self.env).stdout
            states = [(p["metadata"]["name"], (p.get("status") or {}).get("phase"),
                       [c.get("state") for c in (p.get("status") or {}).get("containerStatuses") or []])
                      for p in (json.loads(pods).get("items") if pods else [])]
            raise AssertionError(f"{e}; pods now: {json.dumps(states, indent=1)}") from None

