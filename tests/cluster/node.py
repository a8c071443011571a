"""A real Kubernetes node for the cluster tier: kubelet + containerd + runc on this machine, next to the kwok nodes.

Why: kwok fakes pod status, so nothing the trainer does in a pod (its exit code, its termination message, its
logs, the metrics the operator scrapes from the pod IP, the adapter it writes to a volume) was ever observed.
This node runs the pods for real from the project's images: the kubelet is built from its Go module like the
control plane (scripts/install-cluster-tools.sh), containerd, runc and the CNI bridge plugin are Debian's
(scripts/install-image-tools.sh), images are copied from the build store into containerd (no registry).

What this machine needs from it (docs/images.md says why each one):
- containerd's `restrict_oom_score_adj`: root here lacks CAP_SYS_RESOURCE, so runc cannot lower a sandbox's
  oom_score_adj (-998) and every pod sandbox would fail ("can't get final child's PID from pipe: EOF").
- the node's IP is its CNI bridge's address (the kubelet refuses a loopback node IP); the bridge is made first,
  with a /24 no other route uses, and pods get addresses on it that the host (the operator) can reach.
- the kubelet runs under a cgroup root of its own (cgroup v1 here: `failCgroupV1: false`, cgroupfs driver).
- the kubelet sets kernel tunables at start (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1)
  and the bridge plugin turns on ip_forward: stop() puts back the values it found.
- a pod sandbox ("pause") image is made from the local base image (nothing can be pulled).
- cluster DNS: a CoreDNS (built from its Go module like the kubelet) serves `cluster.local` from this control
  plane's API (its `kubernetes` plugin) on the node's IP, port 53, and forwards other names to this machine's
  resolver; the kubelet's `clusterDNS` points pods at it. Multi-node jobs need it: their pods find rank 0 by
  the headless Service name `<job>-0.<service>.<namespace>.svc` (a kube-proxy is not needed: pods resolve
  pod IPs, and a headless Service has no virtual IP).

The node is tainted (`TAINT`); pods that should run here tolerate it and select it by hostname, so the other
cluster tests' pods never land on it. State, logs and sockets live in one temp dir that stop() removes;
containerd's image store is kept in the cache between sessions (`cache_dir`), so the trainer image (6 GB) is
copied in once per build, not once per session.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

from controlplane import ControlPlane, ControlPlaneError, _die_with_parent, _tail, free_port, wait_for
from node_cleanup import RECORDS, alive, cgroup_hierarchies, names, records, release, restore_sysctls, sweep_stale

TAINT = {"key": "finetune.io/real-node", "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}
# The sandbox process: holds the pod's namespaces until the runtime stops it. Its image is the local base with
# this as entrypoint, tagged by a hash of both.
PAUSE = ("import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
         "[signal.pause() for _ in iter(int, 1)]")
SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
           "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward")
CNI_BIN = Path("/usr/lib/cni")
BUILD_LABEL = "finetune.io/build-id"  # on each image loaded into containerd: the build (buildah image id) it is
CLUSTER_DOMAIN = "cluster.local"


def pod_placement(node: str) -> dict:
    """The pod spec fields that put a pod on the real node `node` (tolerate its taint, select it)."""
    return {"nodeSelector": {"kubernetes.io/hostname": node}, "tolerations": [dict(TOLERATION)]}


def free_subnet() -> ipaddress.IPv4Network:
    """A 10.244.N.0/24 that no address or route of this machine overlaps (other sessions' nodes included)."""
    used = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    nets = []
    for line in used.splitlines():
        for token in line.split()[:2]:  # "10.1.0.0/16 dev ..." or "local 10.1.0.1 dev ..."
            try:
                nets.append(ipaddress.ip_network(token, strict=False))
                break
            except ValueError:
                continue
    for n in range(100, 250):
        cand = ipaddress.ip_network(f"10.244.{n}.0/24")
        if not any(cand.overlaps(x) for x in nets if x.prefixlen > 0):
            return cand
    raise ControlPlaneError("no free 10.244.N.0/24 for the node's pod network")


class RealNode:
    """One kubelet node, registered as `name` with the control plane `cp`; start() / stop()."""

    def __init__(self, cp: ControlPlane, bin_dir: Path, workdir: Path, base_image: str, store_flags: tuple[str, ...],
                 name: str = "real-node-0", cache_dir: Path | None = None, startup_timeout: float = 120):
        """`cache_dir`: where containerd's image store is kept between sessions (one session at a time uses it;
        another gets a store of its own for the session), so a multi-GB image is copied in once per build."""
        self.cp, self.bin_dir, self.dir, self.name = cp, Path(bin_dir), Path(workdir), name
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.containerd_root = self.dir / "containerd" / "root"
        self._lock: int | None = None
        self.base_image, self.store_flags, self.startup_timeout = base_image, tuple(store_flags), startup_timeout
        key = hashlib.sha256(f"{PAUSE} {base_image}".encode()).hexdigest()[:12]
        self.pause_image = f"localhost/finetune/pause:{key}"
        self.id = uuid.uuid4().hex[:6]
        self.bridge, self.cgroup_root, self.network = names(self.id)
        self.sock = self.dir / "containerd.sock"
        self.logs = self.dir / "logs"
        self.procs: dict[str, subprocess.Popen] = {}
        self.saved_sysctls: dict[str, str] = {}
        self.record: Path | None = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.port = free_port()

    @property
    def ip(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    # ---------------------------------------------------------------- lifecycle
    def start(self, images: list[str]) -> "RealNode":
        """Start containerd and the kubelet, load `images` (refs in the build store) and wait until Ready."""
        for b in ("containerd", "ctr", "runc", "buildah"):
            if not shutil.which(b):
                raise ControlPlaneError(f"{b} missing: run scripts/install-image-tools.sh")
        for b in ("kubelet", "coredns"):
            if not (self.bin_dir / b).exists():
                raise ControlPlaneError(f"{self.bin_dir / b} missing: run scripts/install-cluster-tools.sh")
        self.logs.mkdir(parents=True, exist_ok=True)
        sweep_stale()
        others = records()  # a node of another live session changed the tunables already: keep its originals
        self.saved_sysctls = others[0]["sysctls"] if others else {
            k: Path("/proc/sys", k).read_text().strip() for k in SYSCTLS if Path("/proc/sys", k).exists()}
        RECORDS.mkdir(parents=True, exist_ok=True)
        self.record = RECORDS / f"{self.id}.json"
        self.record.write_text(json.dumps({"pid": os.getpid(), "dir": str(self.dir), "id": self.id,
                                           "sysctls": self.saved_sysctls}))
        try:
            self._claim_cached_root()
            self._network()
            self._cgroups()
            self._start_dns()
            self._start_containerd()
            self.load_images([self._pause_image(), *images])
            self._start_kubelet()
        except BaseException:
            self.stop(remove=False)
            raise
        return self

    def stop(self, remove: bool = True) -> None:
        """Stop the kubelet, every container and containerd; undo mounts, cgroups, bridge and kernel tunables."""
        self._terminate("kubelet")
        self._remove_containers()
        self._terminate("containerd")
        self._terminate("coredns")
        release(self.dir, self.id)
        if self._lock is not None:
            os.close(self._lock)  # gives the cached image store to the next session
            self._lock = None
        if self.record is not None:
            self.record.unlink(missing_ok=True)
            if not [r for r in records() if alive(r["pid"])]:
                restore_sysctls(self.saved_sysctls)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self, container_id: str, sig: str = "KILL") -> None:
        """Send `sig` to a running container's first process (runc), as a crash or the kernel's OOM killer ends
        it: no grace period, nothing in the pod's spec is asked. `container_id` as in the pod's status
        (`containerd://<id>`) or bare."""
        cid = container_id.split("://")[-1]
        root = self.dir / "containerd" / "runc" / "k8s.io"
        res = subprocess.run(["runc", "--root", str(root), "kill", cid, sig], capture_output=True, text=True)
        if res.returncode != 0:
            raise ControlPlaneError(f"runc kill {cid} {sig}: {res.stderr.strip()}")

    # ---------------------------------------------------------------- images
    def load_images(self, refs: list[str]) -> None:
        """Copy images from the build store into containerd's (`buildah push` streamed into `ctr images import`),
        unless containerd already holds that build of the image (a label records the build's image id)."""
        for ref in refs:
            t = time.monotonic()
            build_id = subprocess.run(
                ["buildah", *self.store_flags, "inspect", "--type", "image", "--format", "{{.FromImageID}}", ref],
                capture_output=True, text=True, check=True).stdout.strip()
            if self._loaded_build(ref) == build_id:
                (self.logs / "images.log").open("a").write(f"{ref} already loaded ({build_id[:12]})\n")
                continue
            push = subprocess.Popen(
                ["buildah", *self.store_flags, "push", "-q", ref, f"docker-archive:/dev/stdout:{ref}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            res = subprocess.run(self._ctr("images", "import", "-"), stdin=push.stdout, capture_output=True, text=True)
            push.stdout.close()
            push_err = push.communicate()[1].decode(errors="replace")
            if push.returncode or res.returncode:
                raise ControlPlaneError(f"loading {ref} into containerd failed: {push_err} {res.stderr}")
            subprocess.run(self._ctr("images", "label", ref, f"{BUILD_LABEL}={build_id}"), capture_output=True,
                           check=True)
            self._drop_unnamed()
            (self.logs / "images.log").open("a").write(f"{ref} {time.monotonic() - t:.1f}s\n")

    def _drop_unnamed(self) -> None:
        """Drop the image-id names the CRI plugin gave older builds: once a new build took the tag, they are all
        that keeps an old build's content and snapshots (layers the new build shares stay)."""
        rows = [line.split() for line in
                subprocess.run(self._ctr("images", "ls"), capture_output=True, text=True).stdout.splitlines()[1:]]
        named = {row[2] for row in rows if not row[0].startswith("sha256:")}
        for row in rows:
            if row[0].startswith("sha256:") and row[2] not in named:
                subprocess.run(self._ctr("images", "rm", "--sync", row[0]), capture_output=True, timeout=300)

    def _loaded_build(self, ref: str) -> str | None:
        """The build id label of `ref` in containerd's store, if it holds the image."""
        out = subprocess.run(self._ctr("images", "ls", f"name=={ref}"), capture_output=True, text=True).stdout
        for line in out.splitlines()[1:]:
            labels = dict(kv.split("=", 1) for kv in line.split()[-1].split(",") if "=" in kv)
            return labels.get(BUILD_LABEL)
        return None

    def _pause_image(self) -> str:
        """The sandbox image: the local base image whose entrypoint sleeps until SIGTERM (made once, cached)."""
        have = subprocess.run(["buildah", *self.store_flags, "inspect", "--type", "image", self.pause_image],
                              capture_output=True)
        if have.returncode != 0:
            c = subprocess.run(["buildah", *self.store_flags, "from", "--pull-never", self.base_image],
                               capture_output=True, text=True, check=True).stdout.strip()
            entry = json.dumps(["python3", "-c", PAUSE])
            subprocess.run(["buildah", *self.store_flags, "config", "--entrypoint", entry, "--cmd", "",
                            "--user", "65535:65535", c], check=True, capture_output=True)
            subprocess.run(["buildah", *self.store_flags, "commit", "-q", "--rm", c, self.pause_image],
                           check=True, capture_output=True)
        return self.pause_image

    # ---------------------------------------------------------------- internals
    def _ctr(self, *args: str) -> list[str]:
        return ["ctr", "--address", str(self.sock), "--namespace", "k8s.io", *args]

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.dir, start_new_session=True, preexec_fn=_die_with_parent)

    def _terminate(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _wait(self, name: str, check, what: str) -> None:
        proc = self.procs[name]

        def step():
            if proc.poll() is not None:
                raise ControlPlaneError(f"{name} exited with code {proc.returncode}")
            return check()

        try:
            wait_for(step, self.startup_timeout, f"{name}: {what}", interval=0.25, retry_on=(OSError,))
        except (TimeoutError, ControlPlaneError) as exc:
            raise ControlPlaneError(f"{exc}\n--- last lines of {self.logs / (name + '.log')} ---\n"
                                    f"{_tail(self.logs / (name + '.log'))}") from None

    def _claim_cached_root(self) -> None:
        """Use the cached image store if no other session holds it (an exclusive lock, released at exit)."""
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cache_dir / "containerd-root.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return
        self._lock = fd
        self.containerd_root = self.cache_dir / "containerd-root"

    def _remove_containers(self) -> None:
        """Delete every container (and its task and snapshot) while containerd runs, so a cached store keeps
        images only."""
        if self.procs.get("containerd") is None or self.procs["containerd"].poll() is not None:
            return
        ids = subprocess.run(self._ctr("containers", "ls", "-q"), capture_output=True, text=True).stdout.split()
        for cid in ids:
            subprocess.run(self._ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid), capture_output=True)
            subprocess.run(self._ctr("tasks", "delete", "--force", cid), capture_output=True, timeout=60)
            subprocess.run(self._ctr("containers", "delete", cid), capture_output=True, timeout=60)

    def _network(self) -> None:
        """The pod bridge with the node's IP (the gateway), and the CNI config that puts pods on it."""
        self.subnet = free_subnet()
        for cmd in (["ip", "link", "add", self.bridge, "type", "bridge"],
                    ["ip", "addr", "add", f"{self.ip}/{self.subnet.prefixlen}", "dev", self.bridge],
                    ["ip", "link", "set", self.bridge, "up"]):
            subprocess.run(cmd, check=True, capture_output=True)
        (self.dir / "cni").mkdir(exist_ok=True)
        (self.dir / "cni" / "10-finetune.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": self.network,
            "plugins": [{"type": "bridge", "bridge": self.bridge, "isGateway": True, "ipMasq": False,
                         "hairpinMode": True,
                         "ipam": {"type": "host-local", "ranges": [[{"subnet": str(self.subnet)}]],
                                  "dataDir": str(self.dir / "cni-ipam")}}],
        }))

    def _cgroups(self) -> None:
        """The kubelet's cgroup root, in every hierarchy (cpuset needs its cpus and mems copied down)."""
        for h in cgroup_hierarchies():
            root = h / self.cgroup_root
            root.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):
                if (h / f).exists() and (root / f).exists():
                    (root / f).write_text((h / f).read_text())

    def _start_containerd(self) -> None:
        d = self.dir / "containerd"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        (self.dir / "containerd.toml").write_text(f"""version = 2
root = "{self.containerd_root}"
state = "{d / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"
[{cri}]
  sandbox_image = "{self.pause_image}"
  stream_server_address = "127.0.0.1"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d / 'runc'}"
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{self.dir / 'cni'}"
""")
        self._spawn("containerd", ["containerd", "--config", str(self.dir / "containerd.toml")])
        self._wait("containerd", lambda: subprocess.run(self._ctr("version"), capture_output=True).returncode == 0,
                   "answering on its socket")

    def _start_dns(self) -> None:
        """CoreDNS on the node's IP (port 53), answering cluster.local from the API server; ready once its
        `kubernetes` plugin has synced (its /ready endpoint)."""
        ready = free_port()
        (self.dir / "Corefile").write_text(f"""\
.:53 {{
    bind {self.ip}
    errors
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.cp.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
    cache 5
}}
""")
        self._spawn("coredns", [str(self.bin_dir / "coredns"), "-conf", str(self.dir / "Corefile")])

        def answers() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{ready}/ready", timeout=2) as r:
                return r.status == 200

        self._wait("coredns", answers, "ready (synced with the API server)")

    def _start_kubelet(self) -> None:
        resolv = self.dir / "resolv.conf"
        shutil.copyfile("/etc/resolv.conf", resolv)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{self.cgroup_root}", "failCgroupV1": False,
            "failSwapOn": False, "containerRuntimeEndpoint": f"unix://{self.sock}",
            "address": self.ip, "port": self.port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            # the API server reaches /containerLogs (kubectl logs) without client certs: a loopback-only test node
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "registerWithTaints": [TAINT],
            "podLogsDir": str(self.dir / "pod-logs"), "volumePluginDir": str(self.dir / "volume-plugins"),
            "resolvConf": str(resolv), "clusterDomain": CLUSTER_DOMAIN, "clusterDNS": [self.ip],
            # images were loaded, not pulled: never collect them; evict only when the disk is really full
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
            "serializeImagePulls": False,
        }
        (self.dir / "kubelet.yaml").write_text(json.dumps(config, indent=1))
        self._spawn("kubelet", [str(self.bin_dir / "kubelet"), f"--config={self.dir / 'kubelet.yaml'}",
                                f"--kubeconfig={self.cp.kubeconfig}", f"--root-dir={self.dir / 'kubelet'}",
                                f"--cert-dir={self.dir / 'kubelet-pki'}", f"--hostname-override={self.name}",
                                f"--node-ip={self.ip}", "--v=1"])

        def ready() -> bool:
            node = self.cp.get_json("node", self.name)
            conds = {c["type"]: c["status"] for c in ((node or {}).get("status") or {}).get("conditions", [])}
            return conds.get("Ready") == "True"

        self._wait("kubelet", ready, f"node {self.name} Ready")
