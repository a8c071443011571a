"""A real Kubernetes control plane on loopback, for the "cluster" test tier.

Why: the operator must be tested against the real API server (validation, RBAC, admission), the real
controller-manager (Job controller, garbage collector) and the real scheduler (extended resources such as
nvidia.com/gpu) - things envtest (no controller-manager) and mocks do not give. kwok stands in for the
kubelets: it keeps fake GPU nodes Ready and walks their pods through Running -> Succeeded (Job-owned pods) or
Failed (chaos label). No Docker, no root: every process is a binary built by scripts/install-cluster-tools.sh,
listening on 127.0.0.1 on free ports, with its state and logs in one temp dir that stop() removes.

Security: certs come from a throwaway CA made with the openssl CLI; the API server serves TLS, clients use an
admin client cert (O=system:masters) and RBAC is on. etcd listens on loopback over plain HTTP.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")

FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
GPU_NODE = "gpu-node-0"  # the node the session fixture adds
CHAOS_FAIL_LABEL = "pod-container-running-failed.stage.kwok.x-k8s.io"
# How kwok plays the kubelet of the fake nodes (kwok's fast and chaos pod stages, made to behave like a kubelet
# where the operator's tests need it: held Running, waiting states, SIGTERM exits): see the file's header.
KWOK_POD_STAGES = Path(__file__).resolve().parent / "kwok" / "pod-stages.yaml"
# Requests of these identities are written to the audit log (logs/audit.log): the operator's own, never the tests'.
OPERATOR_USER = "finetune-operator"  # client_kubeconfig(OPERATOR_USER): the operator outside the chart's RBAC
AUDITED_GROUP = "system:serviceaccounts:finetune-system"  # the chart's ServiceAccount
AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["{OPERATOR_USER}"]
- level: Metadata
  userGroups: ["{AUDITED_GROUP}"]
- level: None
"""


class ControlPlaneError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2,
             retry_on: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """Poll check() until it returns something truthy; raise TimeoutError naming `what` after `timeout`.

    Exceptions in `retry_on` count as "not yet"; an AssertionError (a definite failure) and anything else
    propagate at once.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            raise
        except retry_on as exc:
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}"
                               + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(interval)


def _die_with_parent() -> None:
    """Child-side (preexec): get SIGTERM if the test process dies without stop(), e.g. killed by a CI timeout."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok, started on loopback.

    Use as a context manager, or call start() / stop(). `kubeconfig` is an admin kubeconfig file.
    """

    def __init__(self, bin_dir: str | os.PathLike, workdir: str | os.PathLike,
                 stages_dir: str | os.PathLike | None = None, startup_timeout: float = 180.0):
        self.bin_dir = Path(bin_dir)
        self.workdir = Path(workdir)
        self.stages_dir = Path(stages_dir) if stages_dir else self.bin_dir.parent / "kwok-stages"
        self.startup_timeout = startup_timeout
        self.pki = self.workdir / "pki"
        self.logs = self.workdir / "logs"
        self.kubeconfig = self.workdir / "admin.kubeconfig"
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "kcm", "scheduler", "kwok")}
        self.server = f"https://127.0.0.1:{self.ports['apiserver']}"

    # ---------------------------------------------------------------- lifecycle
    def __enter__(self) -> "ControlPlane":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ControlPlane":
        for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kubectl"):
            if not os.access(self.bin_dir / b, os.X_OK):
                raise ControlPlaneError(f"{self.bin_dir / b} missing: run scripts/install-cluster-tools.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            self._make_pki()
            self._write_kubeconfig()
            self._start_etcd()
            self._start_apiserver()
            self._start_controller_manager()
            self._start_scheduler()
            self._start_kwok()
            # Pods are only admitted once their namespace's `default` ServiceAccount exists.
            self._wait("kube-controller-manager",
                       lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
                       "the default ServiceAccount (serviceaccount controller)")
        except BaseException:
            self.stop(remove=False)
            raise
        return self

    def stop(self, remove: bool = True) -> None:
        """Terminate every process (newest first), then remove the temp dir (kept if remove=False)."""
        for name, proc in reversed(list(self.procs.items())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()
        if remove:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- clients
    @property
    def env(self) -> dict[str, str]:
        """Environment for client tools: KUBECONFIG, our kubectl/helm first on PATH, helm state in the temp dir."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.workdir / "helm" / var.split("_")[1].lower())
        return env

    def kubectl(self, *args: str, input: str | None = None, check: bool = False,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "kubectl"), *args], input=input, capture_output=True,
                              text=True, env=self.env, check=check, timeout=timeout)

    def helm(self, *args: str, input: str | None = None, check: bool = False,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin_dir / "helm"), *args], input=input, capture_output=True,
                              text=True, env=self.env, check=check, timeout=timeout)

    def get_json(self, *args: str) -> dict | None:
        """`kubectl get ARGS -o json` as a dict, or None when the object is not found."""
        res = self.kubectl("get", *args, "-o", "json")
        if res.returncode != 0:
            if "NotFound" in res.stderr or "not found" in res.stderr:
                return None
            raise ControlPlaneError(f"kubectl get {' '.join(args)} failed: {res.stderr.strip()}")
        return json.loads(res.stdout)

    def apply(self, obj: dict) -> subprocess.CompletedProcess:
        """Create or update one object given as a dict (`kubectl apply`); raises on failure."""
        res = self.kubectl("apply", "-f", "-", input=json.dumps(obj))
        if res.returncode != 0:
            raise ControlPlaneError(f"kubectl apply failed: {res.stderr.strip()}")
        return res

    def create_namespace(self, name: str, timeout: float = 60, labels: dict[str, str] | None = None) -> str:
        """Create a namespace and wait for its default ServiceAccount, without which pods are refused."""
        self.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}})
        wait_for(lambda: self._api_get(f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200,
                 timeout, f"ServiceAccount {name}/default")
        return name

    def add_gpu_node(self, name: str, gpus: int = 2, timeout: float = 90) -> dict:
        """Create a kwok-managed Node with `gpus` nvidia.com/gpu and wait until it is Ready and untainted.

        The node carries no taints of its own; the not-ready taint the API server puts on every new node is
        removed by the controller-manager once kwok reports Ready, so pods need no tolerations.
        """
        resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
        self.apply({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION: "fake"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok",
                                    "nvidia.com/gpu.present": "true"}},
            "status": {"capacity": resources, "allocatable": resources},
        })

        def ready() -> dict | None:
            node = self.get_json("node", name)
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True" and not node["spec"].get("taints"):
                return node
            return None

        return wait_for(ready, timeout, f"node {name} Ready without taints")

    def client_kubeconfig(self, user: str, groups: tuple[str, ...] = ("system:masters",)) -> Path:
        """A kubeconfig for a client cert of `user` in `groups` (the operator's own identity, audited)."""
        path = self.workdir / f"{user}.kubeconfig"
        if not path.exists():
            ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
            subj = "".join(f"/O={g}" for g in groups) + f"/CN={user}"
            (self.pki / f"{user}.ext").write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,"
                                                  "keyEncipherment\nextendedKeyUsage=clientAuth\n")
            self._openssl("req", "-new", *ec, "-keyout", f"{user}.key", "-out", f"{user}.csr", "-subj", subj)
            self._openssl("x509", "-req", "-in", f"{user}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial",
                          f"0x{os.urandom(8).hex()}", "-days", "7", "-extfile", f"{user}.ext", "-out", f"{user}.crt")
            path.write_text(self.kubeconfig.read_text().replace("admin.crt", f"{user}.crt")
                            .replace("admin.key", f"{user}.key"))
        return path

    def token_kubeconfig(self, namespace: str, service_account: str) -> Path:
        """A kubeconfig that authenticates as a ServiceAccount (a bound token), with exactly its RBAC."""
        res = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=2h", check=True)
        path = self.workdir / f"{namespace}-{service_account}.kubeconfig"
        path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: {self.server}, certificate-authority: {self.pki / 'ca.crt'}}}
users:
- name: sa
  user: {{token: {res.stdout.strip()}}}
contexts:
- name: test
  context: {{cluster: test, user: sa, namespace: default}}
current-context: test
""")
        return path

    def audit_events(self, user: str | None = None) -> list[dict]:
        """The audit log's entries (the operator's requests only, see AUDIT_POLICY), optionally of one user."""
        path = self.logs / "audit.log"
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        return [e for e in entries if user is None or e.get("user", {}).get("username") == user]

    # ---------------------------------------------------------------- internals
    def _openssl(self, *args: str) -> None:
        res = subprocess.run(["openssl", *args], capture_output=True, text=True, cwd=self.pki)
        if res.returncode != 0:
            raise ControlPlaneError(f"openssl {' '.join(args)} failed: {res.stderr}")

    def _make_pki(self) -> None:
        """Throwaway CA, API server serving cert, admin client cert and service-account key pair (P-256)."""
        self.pki.mkdir(parents=True, exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        self._openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "7",
                      "-subj", "/CN=finetune-test-ca")

        def leaf(name: str, subj: str, ext: str) -> None:
            (self.pki / f"{name}.ext").write_text(ext)
            self._openssl("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subj)
            self._openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                          "-set_serial", f"0x{os.urandom(8).hex()}", "-days", "7",
                          "-extfile", f"{name}.ext", "-out", f"{name}.crt")

        leaf("apiserver", "/CN=kube-apiserver",
             "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
             "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n")
        leaf("admin", "/O=system:masters/CN=finetune-test-admin",
             "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=clientAuth\n")
        self._openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key")
        self._openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {self.server}
    certificate-authority: {self.pki / 'ca.crt'}
users:
- name: admin
  user:
    client-certificate: {self.pki / 'admin.crt'}
    client-key: {self.pki / 'admin.key'}
contexts:
- name: test
  context: {{cluster: test, user: admin, namespace: default}}
current-context: test
""")

    def _ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        if not verify:  # controller-manager/scheduler self-signed serving certs, loopback only
            return ssl._create_unverified_context()  # noqa: S323
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _http_get(self, url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def _api_get(self, path: str) -> tuple[int, str]:
        return self._http_get(self.server + path, self._ssl_context())

    def _spawn(self, name: str, binary: str, *args: str, env: dict[str, str] | None = None) -> None:
        with open(self.logs / f"{name}.log", "wb") as log:  # the child keeps its own copy of the fd
            self.procs[name] = subprocess.Popen(
                [str(self.bin_dir / binary), *args], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.workdir, start_new_session=True,
                env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)

    def _wait(self, name: str, check: Callable[[], object], what: str) -> None:
        """Poll check() until truthy; fail fast, with the log's tail, if `name` exits or time runs out."""
        proc = self.procs[name]

        def step() -> object:
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with code {proc.returncode}")
            try:
                return check()
            except (OSError, urllib.error.URLError, ssl.SSLError):
                return None

        try:
            wait_for(step, self.startup_timeout, f"{name}: {what}", interval=0.25, retry_on=())
        except (TimeoutError, ControlPlaneError) as exc:
            raise ControlPlaneError(f"{exc}\n--- last lines of {self.logs / (name + '.log')} ---\n"
                                    f"{_tail(self.logs / (name + '.log'))}") from None

    def _healthz(self, port: int, path: str = "/healthz", tls: bool = True) -> bool:
        scheme = "https" if tls else "http"
        status, _ = self._http_get(f"{scheme}://127.0.0.1:{port}{path}",
                                   self._ssl_context(verify=False) if tls else None)
        return status == 200

    def _start_etcd(self) -> None:
        c, p = self.ports["etcd"], self.ports["etcd-peer"]
        self._spawn("etcd", "etcd", "--name=test", f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{c}", f"--advertise-client-urls=http://127.0.0.1:{c}",
                    f"--listen-peer-urls=http://127.0.0.1:{p}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
                    f"--initial-cluster=test=http://127.0.0.1:{p}", "--unsafe-no-fsync", "--log-level=warn")
        self._wait("etcd", lambda: self._healthz(c, "/health", tls=False), "/health")

    def _audit_policy(self) -> Path:
        path = self.workdir / "audit-policy.yaml"
        path.write_text(AUDIT_POLICY)
        return path

    def _start_apiserver(self) -> None:
        pki = self.pki
        self._spawn(
            "kube-apiserver", "kube-apiserver",
            f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports['apiserver']}", f"--cert-dir={self.workdir / 'apiserver'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",  # ClusterIP bookkeeping only; nothing routes there
            "--authorization-mode=Node,RBAC", "--allow-privileged=true",
            "--endpoint-reconciler-type=none",  # a loopback address is not a valid Endpoints address
            "--kubelet-preferred-address-types=InternalIP",  # a real node's name does not resolve (kubectl logs)
            "--profiling=false",
            f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={self.logs / 'audit.log'}",
            "--audit-log-format=json", "--audit-log-mode=batch", "--audit-log-batch-max-wait=1s",
        )
        self._wait("kube-apiserver", lambda: self._api_get("/readyz")[0] == 200, "/readyz")

    def _component_flags(self, name: str) -> list[str]:
        kc = str(self.kubeconfig)
        return [f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--cert-dir={self.workdir / name}", "--leader-elect=false"]

    def _start_controller_manager(self) -> None:
        self._spawn(
            "kube-controller-manager", "kube-controller-manager",
            *self._component_flags("kube-controller-manager"), f"--secure-port={self.ports['kcm']}",
            f"--service-account-private-key-file={self.pki / 'sa.key'}",
            f"--root-ca-file={self.pki / 'ca.crt'}", "--use-service-account-credentials=true",
            "--controllers=*",  # includes job, garbage-collector, namespace, serviceaccount, nodelifecycle
        )
        self._wait("kube-controller-manager", lambda: self._healthz(self.ports["kcm"]), "/healthz")

    def _start_scheduler(self) -> None:
        self._spawn("kube-scheduler", "kube-scheduler", *self._component_flags("kube-scheduler"),
                    f"--secure-port={self.ports['scheduler']}")
        self._wait("kube-scheduler", lambda: self._healthz(self.ports["scheduler"]), "/healthz")

    def _start_kwok(self) -> None:
        self._spawn("kwok", "kwok", f"--kubeconfig={self.kubeconfig}", f"--config={KWOK_POD_STAGES}",
                    "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
                    f"--server-address=127.0.0.1:{self.ports['kwok']}",
                    env={"KWOK_WORKDIR": str(self.workdir / "kwok")})  # ignore any ~/.kwok/kwok.yaml
        self._wait("kwok", lambda: self._healthz(self.ports["kwok"], tls=False), "/healthz")
