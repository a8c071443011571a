"""One process run from an image's root filesystem by runc, the OCI runtime a node's containerd drives.

Why runc and not chroot: it gives the container what a kubelet's runtime gives a pod's container - its own
mount, PID, IPC and UTS namespaces, a read-only root when asked, no capabilities, no new privileges, the
uid/gid/groups of the pod's securityContext, a cgroup with the memory limit, /dev and /proc of its own - so a
check that passes here is a check on what the image does in a pod. (`podman run` is refused on this machine:
docs/images.md; runc with a spec that sets no RLIMIT_NPROC works.)

Networking is the caller's: the host's network (the default, for the image tests) or a network namespace
prepared beforehand (`netns`, a path such as /var/run/netns/NAME), as a CNI plugin would.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

RUNC_ROOT = Path("/run/finetune-test-runc")  # runc's state (one dir per running container)
MASKED = ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
          "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"]
READONLY = ["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container (a volume, a ConfigMap's files, /etc/hosts)."""

    source: str
    destination: str
    readonly: bool = False


@dataclass
class Process:
    """What to run and as whom: the container's argv, env, working dir and identity."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)


def oci_spec(rootfs: Path, proc: Process, *, mounts: list[Mount] = (), readonly_root: bool = True,
             hostname: str = "container", netns: Optional[str] = None, memory_limit: Optional[int] = None,
             shm_bytes: int = 64 << 20, cgroup: Optional[str] = None) -> dict:
    """The OCI runtime config (config.json) for one container.

    Args:
        rootfs: the image's root filesystem (a mounted image).
        proc: argv, env, cwd and identity of the process.
        mounts: bind mounts on top of the root.
        readonly_root: mount the root read-only (a pod's `readOnlyRootFilesystem: true`).
        hostname: the UTS hostname (a pod's `hostname`).
        netns: a network namespace to join; None shares the host's network.
        memory_limit: bytes, enforced by the memory cgroup (a container's `limits.memory`).
        shm_bytes: size of the /dev/shm tmpfs.
        cgroup: cgroupsPath (default: runc's, under the container's id).

    Returns:
        The spec as a dict: no capabilities, no new privileges, RLIMIT_NOFILE as the caller has it and no other
        rlimit (this machine refuses to raise any hard limit: its root lacks CAP_SYS_RESOURCE).
    """
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)  # raising a hard limit needs CAP_SYS_RESOURCE: absent here
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns:
        namespaces.append({"type": "network", "path": netns})
    base_mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_bytes}"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]
    if not netns:  # a new sysfs needs a network namespace of its own; share the host's read-only instead
        base_mounts[-1] = {"destination": "/sys", "type": "bind", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    binds = [{"destination": m.destination, "type": "bind", "source": m.source,
              "options": ["rbind", "ro" if m.readonly else "rw"]} for m in mounts]
    resources: dict = {"devices": [{"allow": False, "access": "rwm"}]}
    if memory_limit:
        resources["memory"] = {"limit": int(memory_limit)}
    linux = {"namespaces": namespaces, "maskedPaths": MASKED, "readonlyPaths": READONLY, "resources": resources}
    if cgroup:
        linux["cgroupsPath"] = cgroup
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": proc.uid, "gid": proc.gid, "additionalGids": list(proc.groups)},
            "args": list(proc.args),
            "env": [f"{k}={v}" for k, v in proc.env.items()],
            "cwd": proc.cwd or "/",
            "capabilities": {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": nofile[0], "hard": nofile[1]}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": readonly_root},
        "hostname": hostname,
        "mounts": base_mounts + binds,
        "linux": linux,
    }


class Container:
    """A runc container started in the background; stdout and stderr go to one log file (as a kubelet keeps)."""

    def __init__(self, cid: str, spec: dict, log: Path):
        self.id, self.log = cid, Path(log)
        self.bundle = Path(tempfile.mkdtemp(prefix=f"bundle-{cid}-"))
        (self.bundle / "config.json").write_text(json.dumps(spec))
        RUNC_ROOT.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            # runc stays the parent of the container's init; its exit status is the container's.
            self.proc = subprocess.Popen(["runc", "--root", str(RUNC_ROOT), "run", "--bundle", str(self.bundle), cid],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def poll(self) -> Optional[int]:
        """The exit code once the container has exited (128+N after signal N), else None."""
        code = self.proc.poll()
        if code is None:
            return None
        self._cleanup()
        return code if code >= 0 else 128 - code

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; kill the container and raise TimeoutError after `timeout` seconds."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise TimeoutError(f"container {self.id} still running after {timeout:.0f}s") from None
        return self.poll()  # type: ignore[return-value]

    def kill(self, sig: int = signal.SIGTERM) -> None:
        """Send `sig` to the container's init process (what a kubelet does on delete: TERM, later KILL)."""
        subprocess.run(["runc", "--root", str(RUNC_ROOT), "kill", self.id, str(int(sig))],
                       capture_output=True, timeout=30)

    def _cleanup(self) -> None:
        subprocess.run(["runc", "--root", str(RUNC_ROOT), "delete", "--force", self.id], capture_output=True,
                       timeout=30)
        shutil.rmtree(self.bundle, ignore_errors=True)


def run(rootfs: Path, proc: Process, *, timeout: float, log: Path, cid: Optional[str] = None, **spec_kw) -> int:
    """Run one container to completion; its exit code. Output goes to `log`. See oci_spec for `spec_kw`."""
    cid = cid or f"ft-{os.getpid()}-{os.urandom(3).hex()}"
    return Container(cid, oci_spec(rootfs, proc, **spec_kw), log).wait(timeout)
