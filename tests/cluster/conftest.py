"""Fixtures for the "cluster" test tier: one real control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok) per test session, with one fake GPU node, so tests see what a user of a real cluster sees.

Binaries come from $FINETUNE_K8S_BIN if set, else from scripts/install-cluster-tools.sh (a no-op once built;
a cold build takes many minutes, so CI should run that script as its own step first).
Every test under tests/cluster gets the `cluster` marker.
Set FINETUNE_KEEP_CLUSTER=1 to keep the temp dir (certs, kubeconfig, logs/) after the session.

`cp` is the control plane with the FineTuneJob CRD installed (a module may override it, e.g. to add its nodes);
`operator` runs the operator against it for one test.

`real_node` adds a real node (kubelet + containerd + runc, node.py) that runs pods from the project's images,
built by scripts/build-images.sh; `trainer_on_node` also builds the trainer image and loads it there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:  # works whatever --import-mode is
    sys.path.insert(0, str(HERE))

from controlplane import GPU_NODE, ControlPlane  # noqa: E402
from node import RealNode  # noqa: E402
from support import images  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the local Kubernetes control plane (tests/cluster)")


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.cluster)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_sessionstart(session: pytest.Session) -> None:
    # A CI timeout or `kill` sends SIGTERM, which would end pytest without tearing fixtures down; as an interrupt
    # it does, so the real node gives back its bridge, cgroups and kernel tunables (node.py; and if even this is
    # missed, e.g. SIGKILL, the next session's node sweeps them).
    signal.signal(signal.SIGTERM, _interrupt)


def cluster_bin_dir() -> Path:
    if os.environ.get("FINETUNE_K8S_BIN"):
        return Path(os.environ["FINETUNE_K8S_BIN"])
    res = subprocess.run(["bash", str(REPO / "scripts" / "install-cluster-tools.sh")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        tail = "\n".join(res.stderr.splitlines()[-30:])
        pytest.fail(f"scripts/install-cluster-tools.sh failed ({res.returncode}):\n{tail}", pytrace=False)
    return Path(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def control_plane():
    workdir = Path(tempfile.mkdtemp(prefix="finetune-k8s-"))
    cp = ControlPlane(cluster_bin_dir(), workdir)
    try:
        cp.start()
        cp.add_gpu_node(GPU_NODE, gpus=2)
        yield cp
    finally:
        keep = os.environ.get("FINETUNE_KEEP_CLUSTER") == "1"
        cp.stop(remove=not keep)
        if keep:
            print(f"\ncontrol plane files kept in {workdir}", file=sys.stderr)


# Every test namespace enforces the "restricted" Pod Security level: the trainer pods the operator renders must be
# admitted there (what a hardened cluster does), and a pod that is not fails to be created.
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture
def namespace(control_plane: ControlPlane):
    """A fresh namespace (with its default ServiceAccount, Pod Security "restricted") per test, deleted afterwards
    without waiting: GPUs held by its still-running pods are freed a few seconds later, when kwok has deleted them."""
    name = control_plane.create_namespace(f"t-{uuid.uuid4().hex[:8]}", labels=RESTRICTED)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="session")
def real_node(control_plane: ControlPlane):
    """A kubelet node (`real_node.name`) running pods for real; the operator image is loaded (python, no torch).

    Pods get there with `node.pod_placement(real_node.name)` (its taint keeps every other pod off it).
    """
    built = images.build("operator")
    cache = Path(os.environ.get("FINETUNE_CACHE") or Path.home() / ".cache" / "finetune-operator")
    node = RealNode(control_plane, cluster_bin_dir(), control_plane.workdir / "real-node",
                    base_image=images.base_image(), store_flags=images.store_flags(), cache_dir=cache / "node")
    node.start([built["operator"].ref])
    try:
        yield node
    finally:
        node.stop(remove=os.environ.get("FINETUNE_KEEP_CLUSTER") != "1")


@pytest.fixture(scope="session")
def trainer_on_node(real_node: RealNode) -> str:
    """The trainer image, built (cached) and loaded into the real node; its reference."""
    ref = images.build("trainer")["trainer"].ref
    real_node.load_images([ref])
    return ref


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane) -> ControlPlane:
    from scenario import install_crd

    install_crd(control_plane)
    return control_plane


@pytest.fixture
def operator(cp):
    from scenario import running_operator

    with running_operator(cp) as runner:
        yield runner
