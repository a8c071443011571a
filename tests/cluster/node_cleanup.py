"""What a real node (node.py) holds on this machine and how it is freed: its containers, shims, mounts, cgroups,
bridge and CNI leftovers (`release`), also when the session that made it was killed before stop().

Why a module of its own: this is the part that must work with nothing of the node left running - the next
session reads the records of dead ones (`sweep_stale`) and frees what they held, restoring the kernel tunables
the first node found once no node is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

# One record per running node: what it holds on this machine, so a session killed before stop() (CI timeout,
# SIGKILL) is cleaned up by the next one (sweep_stale), and the kernel tunables found first are restored last.
RECORDS = Path("/run/finetune-nodes")


def cgroup_hierarchies() -> list[Path]:
    """Mount points of this machine's cgroup hierarchies (v1: one per controller, plus the hybrid unified one)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            out.append(Path(fields[4]))
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def records() -> list[dict]:
    out = []
    for f in sorted(RECORDS.glob("*.json")):
        try:
            out.append(json.loads(f.read_text()) | {"file": str(f)})
        except (OSError, ValueError):
            continue
    return out


def names(node_id: str) -> tuple[str, str, str]:
    """(bridge, cgroup root, CNI network) of node `node_id`; interface names have 15 characters at most."""
    return f"ftn{node_id}", f"finetune-node-{node_id}", f"finetune-{node_id}"


def release(workdir: Path, node_id: str) -> None:
    """Free what a node holds: its containers (runc), its containerd shims, the mounts under its dir, its
    cgroups, its bridge, and what the kubelet and CNI leave in fixed places (/var/log/containers links, the CNI
    result cache). Safe to call twice and on a node whose processes are gone."""
    bridge, cgroup_root, network = names(node_id)
    runc_root = workdir / "containerd" / "runc" / "k8s.io"
    ids = [p.name for p in runc_root.iterdir() if p.is_dir()] if runc_root.is_dir() else []
    for cid in ids:
        subprocess.run(["runc", "--root", str(runc_root), "kill", "--all", cid, "KILL"], capture_output=True)
    for cid in ids:
        subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", cid], capture_output=True)
    sock = str(workdir / "containerd.sock").encode()
    for p in Path("/proc").iterdir():
        try:
            cmd = (p / "cmdline").read_bytes().split(b"\0") if p.name.isdigit() else []
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and sock in cmd:
            os.kill(int(p.name), signal.SIGKILL)
    prefix = str(workdir) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)
    for h in cgroup_hierarchies():
        root = h / cgroup_root
        if root.is_dir():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            root.rmdir()
    subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    for link in Path("/var/log/containers").glob("*.log"):
        if os.readlink(link).startswith(prefix):
            link.unlink()
    for cached in Path("/var/lib/cni/results").glob(f"{network}-*"):
        cached.unlink()


def restore_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        try:
            Path("/proc/sys", key).write_text(value)
        except OSError:
            pass


def sweep_stale() -> None:
    """Release the nodes of sessions that died without stop(); restore the kernel tunables if none is left."""
    live = []
    for rec in records():
        if alive(rec["pid"]):
            live.append(rec)
            continue
        release(Path(rec["dir"]), rec["id"])
        shutil.rmtree(rec["dir"], ignore_errors=True)
        Path(rec["file"]).unlink(missing_ok=True)
        if not [r for r in records() if alive(r["pid"])]:
            restore_sysctls(rec["sysctls"])
