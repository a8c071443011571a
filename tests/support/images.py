"""The project's images, built for real from its Dockerfiles and opened for tests to look inside and run.

Why: a Dockerfile is only proven by building it and running what it holds. There is no Docker engine here;
scripts/build-images.sh builds both images with buildah (on a local debootstrapped base, cached between runs
in its own store) and this module reads them through the same store: the image's config (USER, ENTRYPOINT,
ENV, size) and its root filesystem, mounted for runc (support/container.py) to run from.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import pytest

from support import container

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "build-images.sh"
INSTALL = REPO / "scripts" / "install-image-tools.sh"
HOSTNAME = "image-test"  # the containers' hostname (resolves to loopback: they share the host's network)


@dataclass(frozen=True)
class Image:
    """A built image: its reference in the store, its id and how long this build took (cached: seconds)."""

    name: str
    ref: str
    id: str
    build_seconds: int


def _script(*args: str, timeout: float) -> str:
    res = subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.splitlines()[-40:])
        pytest.fail(f"scripts/build-images.sh {' '.join(args)} failed ({res.returncode}):\n{tail}", pytrace=False)
    return res.stdout


@functools.cache
def store_flags() -> tuple[str, ...]:
    """buildah's flags for the project's image store (its own root under the cache, overlay driver)."""
    return tuple(_script("--store-flags", timeout=30).split())


@functools.cache
def base_image() -> str:
    """The local base image the test builds use instead of the production bases (made by build())."""
    return _script("--base-image", timeout=30).strip()


def buildah(*args: str, timeout: float = 120) -> str:
    """Run buildah on the project's store; its stdout. Raises CalledProcessError with stderr on failure."""
    res = subprocess.run(["buildah", *store_flags(), *args], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise subprocess.CalledProcessError(res.returncode, res.args, res.stdout, res.stderr)
    return res.stdout


def build(*names: str, timeout: float = 3600) -> dict[str, Image]:
    """Build (or find cached) `localhost/finetune/<name>:test` for each name, installing the tools if absent.

    Raises:
        pytest.fail.Exception: not root, the tools cannot be installed or a build fails (with the log's tail).
    """
    if os.geteuid() != 0:
        pytest.fail("building and running images needs root here (buildah's chroot isolation, runc, mounts)",
                    pytrace=False)
    res = subprocess.run(["bash", str(INSTALL)], capture_output=True, text=True, timeout=900)
    if res.returncode != 0:
        pytest.fail(f"scripts/install-image-tools.sh failed:\n{res.stderr[-3000:]}", pytrace=False)
    out = {}
    for line in _script(*names, timeout=timeout).splitlines():
        name, image_id, seconds = line.split()
        out[name] = Image(name, f"localhost/finetune/{name}:test", image_id, int(seconds))
    return out


def config(ref: str) -> dict:
    """The image's OCI config: User, Entrypoint, Cmd, Env, WorkingDir, ExposedPorts, Labels."""
    return json.loads(buildah("inspect", "--type", "image", ref))["OCIv1"]["config"]


def size_bytes(root: Path) -> int:
    """The unpacked size of a mounted root filesystem (what the image takes on a node's disk)."""
    out = subprocess.run(["du", "-sbx", str(root)], capture_output=True, text=True, check=True, timeout=300)
    return int(out.stdout.split()[0])


@contextlib.contextmanager
def rootfs(ref: str) -> Iterator[Path]:
    """The image's root filesystem, mounted (a fresh writable overlay; the image itself never changes)."""
    name = f"ft-test-{uuid.uuid4().hex[:8]}"
    buildah("from", "--name", name, "--pull-never", ref)
    try:
        yield Path(buildah("mount", name).strip())
    finally:
        subprocess.run(["buildah", *store_flags(), "rm", name], capture_output=True, timeout=120)


def user_ids(cfg: dict) -> tuple[int, int]:
    """The image's USER as numeric (uid, gid).

    Raises:
        ValueError: USER is empty or names a user: a kubelet cannot then check `runAsNonRoot` without a
            `runAsUser`, so the project's images always give numbers.
    """
    user = cfg.get("User") or ""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ValueError(f"USER {user!r} is not numeric uid[:gid]")
    return int(uid), int(gid or uid)


def run_as_image_user(ref: str, args: list[str], *, log: Path, mounts: list[container.Mount] = (),
                      env: Optional[dict[str, str]] = None, timeout: float = 300) -> tuple[int, str]:
    """Run `args` in a container of the image the way a hardened pod runs it: as the image's USER, with its ENV
    (plus `env`) and WORKDIR, a read-only root filesystem, no capabilities; writable only in `mounts` and in an
    empty /tmp (the pods' /tmp emptyDir) unless `mounts` gives /tmp. /etc/hosts is provided as a container
    runtime provides it (`localhost` resolves). Returns (exit code, output)."""
    cfg = config(ref)
    uid, gid = user_ids(cfg)
    image_env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
    proc = container.Process(args, env=image_env | (env or {}), cwd=cfg.get("WorkingDir") or "/", uid=uid, gid=gid)
    log.unlink(missing_ok=True)
    with rootfs(ref) as root, tempfile.TemporaryDirectory(prefix="pod-tmp-") as tmp:
        os.chmod(tmp, 0o1777)
        hosts = Path(tmp) / ".hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost {HOSTNAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        mounts = [*mounts, container.Mount(str(hosts), "/etc/hosts", readonly=True)]
        if not any(m.destination == "/tmp" for m in mounts):
            mounts.append(container.Mount(tmp, "/tmp"))
        code = container.run(root, proc, timeout=timeout, log=log, mounts=list(mounts), readonly_root=True,
                             hostname=HOSTNAME)
    return code, log.read_text(errors="replace")
