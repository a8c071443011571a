"""Kueue's real controller manager on the test control plane, with its CRDs, webhooks and certificates.

Why: "Kueue admits FineTuneJobs" is only true if Kueue's own code decides it - its Job integration, its webhooks
(which suspend a queued Job at creation), its scheduler, its preemption. The binary, Kueue's CRDs and its webhook
manifests come from scripts/install-cluster-tools.sh (built from Kueue's Go module, keyed by version).

How it is wired on loopback: Kueue manages its own certificates (internalCertManagement): it makes a CA and a
serving certificate for `kueue-webhook-service.kueue-system.svc` and injects the CA into its webhook
configurations and the conversion webhooks of its CRDs; the harness writes the certificates from Kueue's Secret
into its certDir, as the kubelet does for the Secret volume of Kueue's pod. The API server reaches that Service through an
EndpointSlice naming this machine's address (a loopback address is not a valid endpoint), which it uses because
the control plane runs with `--enable-aggregator-routing` (KueueControlPlane): the webhook resolver then routes to
endpoints instead of a ClusterIP nothing serves. Only Kueue's own webhooks and the batch/v1 Job ones are
registered: the other integrations' are left out (Kueue serves no handler for them).
"""

from __future__ import annotations

import base64
import copy
import os
import re
import socket
import subprocess
from pathlib import Path

import yaml
from controlplane import ControlPlane, ControlPlaneError, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
SECRET = "kueue-webhook-server-cert"
CONVERTED_CRDS = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
KEPT_API_GROUPS = {"batch", "kueue.x-k8s.io"}


def kueue_version() -> str:
    text = (REPO / "scripts" / "install-cluster-tools.sh").read_text()
    return re.search(r"^KUEUE_VERSION=(\S+)", text, re.M).group(1)


def kueue_dir(bin_dir: Path) -> Path:
    """Where install-cluster-tools.sh put Kueue: <root>/kueue-v<version>/{bin/kueue, manifests/}."""
    return Path(bin_dir).parent / f"kueue-v{kueue_version()}"


class KueueControlPlane(ControlPlane):
    """A control plane whose API server routes webhook Services to their endpoints (see the module docstring)."""

    def _spawn(self, name: str, binary: str, *args: str, env: dict[str, str] | None = None) -> None:
        if name == "kube-apiserver":
            args = (*args, "--enable-aggregator-routing=true")
        super()._spawn(name, binary, *args, env=env)


def host_address() -> str:
    """This machine's first non-loopback IPv4 address (where the API server reaches Kueue's webhook server)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    for addr in out:
        if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", addr) and not addr.startswith("127."):
            return addr
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no packet is sent
        s.connect(("192.0.2.1", 9))
        return s.getsockname()[0]


class Kueue:
    """Kueue's controller manager, started against `cp` (a KueueControlPlane); stop() ends it."""

    def __init__(self, cp: ControlPlane, root: Path):
        self.cp, self.root = cp, Path(root)
        self.binary = self.root / "bin" / "kueue"
        self.workdir = cp.workdir / "kueue"
        self.ports = {"webhook": free_port(), "health": free_port()}

    def start(self, timeout: float = 180) -> "Kueue":
        if not os.access(self.binary, os.X_OK):
            raise ControlPlaneError(f"{self.binary} missing: run scripts/install-cluster-tools.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cp.create_namespace(NAMESPACE)
        # the Secret Kueue's cert rotator fills (its manifests ship it empty)
        self.cp.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE}})
        self._install_crds()
        self._install_webhooks()
        self._route_service()
        config = self.workdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration", "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.ports['health']}"},
            "metrics": {"bindAddress": "0"},
            "webhook": {"port": self.ports["webhook"], "certDir": str(self.workdir / "certs")},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
            "integrations": {"frameworks": ["batch/job"]},
        }))
        # No visibility API server: it wants in-cluster credentials and writes its certificates to /visibility.
        self.cp._spawn("kueue", str(self.binary), f"--config={config}", "--feature-gates=VisibilityOnDemand=false",
                       "--zap-log-level=2", env={"KUBECONFIG": str(self.cp.kubeconfig)})
        self.cp._wait("kueue", self._mount_certificates, f"the certificates in Secret {NAMESPACE}/{SECRET}")
        self.cp._wait("kueue", lambda: self.cp._healthz(self.ports["health"], "/readyz", tls=False),
                      "/readyz (certificates injected, controllers started)")
        wait_for(self._webhook_answers, timeout, "Kueue's webhooks to answer the API server")
        return self

    def stop(self) -> None:
        proc = self.cp.procs.pop("kueue", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------------------------------------ set-up
    def _install_crds(self) -> None:
        for f in sorted((self.root / "manifests" / "crd").glob("*.yaml")):
            crd = yaml.safe_load(f.read_text())
            if crd["spec"]["names"]["plural"] in CONVERTED_CRDS:
                crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                    "clientConfig": {"service": {"namespace": NAMESPACE, "name": SERVICE, "path": "/convert"}},
                    "conversionReviewVersions": ["v1"]}}
            res = self.cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump(crd))
            if res.returncode != 0:
                raise ControlPlaneError(f"Kueue CRD {f.name}: {res.stderr}")
        for f in sorted((self.root / "manifests" / "crd").glob("*.yaml")):
            name = yaml.safe_load(f.read_text())["metadata"]["name"]
            self.cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s", check=True)

    def _install_webhooks(self) -> None:
        for doc in yaml.safe_load_all((self.root / "manifests" / "webhooks.yaml").read_text()):
            if not doc:
                continue
            doc = copy.deepcopy(doc)
            kind = "mutating" if doc["kind"].startswith("Mutating") else "validating"
            doc["metadata"]["name"] = f"kueue-{kind}-webhook-configuration"
            kept = []
            for hook in doc["webhooks"]:
                groups = {g for r in hook.get("rules") or [] for g in r.get("apiGroups") or []}
                if groups and groups <= KEPT_API_GROUPS:
                    hook["clientConfig"]["service"] = {"name": SERVICE, "namespace": NAMESPACE, "port": 443,
                                                       "path": hook["clientConfig"]["service"]["path"]}
                    kept.append(hook)
            doc["webhooks"] = kept
            self.cp.apply(doc)

    def _route_service(self) -> None:
        port = self.ports["webhook"]
        self.cp.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE, "namespace": NAMESPACE},
                       "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}]}})
        self.cp.apply({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                       "metadata": {"name": f"{SERVICE}-host", "namespace": NAMESPACE,
                                    "labels": {"kubernetes.io/service-name": SERVICE,
                                               "endpointslice.kubernetes.io/managed-by": "finetune-tests"}},
                       "addressType": "IPv4", "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                       "endpoints": [{"addresses": [host_address()], "conditions": {"ready": True}}]})

    def _mount_certificates(self) -> bool:
        """Write the Secret's certificates into Kueue's certDir once its rotator has made them: what the kubelet
        does for the Secret volume of Kueue's pod (the rotator waits for the files before it reports ready)."""
        secret = self.cp.get_json("secret", SECRET, "-n", NAMESPACE) or {}
        data = secret.get("data") or {}
        if not all(data.get(k) for k in ("tls.crt", "tls.key", "ca.crt")):
            return False
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        for name in ("ca.crt", "tls.crt", "tls.key"):
            tmp = certs / f".{name}.tmp"
            tmp.write_bytes(base64.b64decode(data[name]))
            tmp.chmod(0o600)
            tmp.replace(certs / name)
        return True

    def _webhook_answers(self) -> bool:
        """A server-side dry run of a LocalQueue goes through Kueue's webhooks (and the conversion of its CRDs)."""
        probe = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
                 "metadata": {"name": "probe", "namespace": NAMESPACE}, "spec": {"clusterQueue": "probe"}}
        res = self.cp.kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(probe))
        return res.returncode == 0
