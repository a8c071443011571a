"""Pod logs on the test control plane: kwok serves a trainer log through the kubelet API, as a kubelet would.

Why: `finetune logs` reads `pods/log` from the API server, which asks the node's kubelet. kwok's fake nodes can
answer that too (its server serves `/containerLogs` from a file named in a ClusterLogs object, in the kubelet's
CRI log format), once it serves TLS and the node names where: this control plane starts kwok with a serving
certificate and the ClusterLogs, the API server prefers InternalIP, and `add_log_node` makes a GPU node whose
InternalIP and kubelet port are kwok's server. A control plane of its own, so the session's is left as it is.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import yaml
from controlplane import FAKE_NODE_ANNOTATION, KWOK_POD_STAGES, ControlPlane, ControlPlaneError, wait_for

TRAINER_LOG = "trainer.log"


def cri_lines(lines: list[str]) -> str:
    """`lines` in the kubelet's CRI log format (`<RFC3339Nano> stdout F <line>`)."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    return "".join(f"{now} stdout F {line}\n" for line in lines)


class LogsControlPlane(ControlPlane):
    """A control plane whose kwok serves every pod's `trainer` log from `self.trainer_log` (see the docstring)."""

    @property
    def trainer_log(self) -> Path:
        return self.workdir / TRAINER_LOG

    def _spawn(self, name: str, binary: str, *args: str, env: dict[str, str] | None = None) -> None:
        if name == "kube-apiserver":
            args = (*args, "--kubelet-preferred-address-types=InternalIP")
        super()._spawn(name, binary, *args, env=env)

    def _start_kwok(self) -> None:
        self._kwok_cert()
        self.trainer_log.write_text("")
        logs = self.workdir / "kwok-logs.yaml"
        logs.write_text(yaml.safe_dump({"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs",
                                        "metadata": {"name": "trainer"},
                                        "spec": {"logs": [{"containers": ["trainer"], "follow": False,
                                                           "logsFile": str(self.trainer_log)}]}}))
        if isinstance(KWOK_POD_STAGES, (str, Path)):  # one file of stages
            stages = Path(KWOK_POD_STAGES)
        else:  # kwok's stage files, by name
            stages = self.workdir / "kwok-stages.yaml"
            missing = [s for s in KWOK_POD_STAGES if not (self.stages_dir / s).is_file()]
            if missing:
                raise ControlPlaneError(f"kwok stage files missing under {self.stages_dir}: {missing}")
            stages.write_text("\n---\n".join((self.stages_dir / s).read_text() for s in KWOK_POD_STAGES))
        self._spawn("kwok", "kwok", f"--kubeconfig={self.kubeconfig}", f"--config={stages}", f"--config={logs}",
                    "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                    f"--server-address=127.0.0.1:{self.ports['kwok']}",
                    f"--tls-cert-file={self.pki / 'kwok.crt'}", f"--tls-private-key-file={self.pki / 'kwok.key'}",
                    env={"KWOK_WORKDIR": str(self.workdir / "kwok")})
        self._wait("kwok", lambda: self._healthz(self.ports["kwok"], tls=True), "/healthz")

    def _kwok_cert(self) -> None:
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (self.pki / "kwok.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,"
                                           "keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
        self._openssl("req", "-new", *ec, "-keyout", "kwok.key", "-out", "kwok.csr", "-subj", "/CN=kwok-kubelet")
        self._openssl("x509", "-req", "-in", "kwok.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
                      f"0x{os.urandom(8).hex()}", "-days", "7", "-extfile", "kwok.ext", "-out", "kwok.crt")

    def add_log_node(self, name: str, gpus: int = 2, timeout: float = 90) -> dict:
        """A kwok GPU node whose kubelet (kwok's server) the API server reaches for pod logs."""
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
        self.apply({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"}},
            "status": {"capacity": resources, "allocatable": resources,
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": self.ports["kwok"]}}},
        })

        def ready() -> dict | None:
            node = self.get_json("node", name)
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            return node if conds.get("Ready") == "True" and not node["spec"].get("taints") else None

        return wait_for(ready, timeout, f"node {name} Ready without taints")
