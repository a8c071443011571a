"""The trainer config as a pod sees it: processes per pod, the launch plan so far, and where each path is mounted.

Why: `finetune run` plans from the local machine; in a cluster the operator plans from the spec alone, before
any pod exists (`finetune_plan.plan_launch` with no GPU size and no model shape: the pod's launcher completes
the rest with the same function), and hands the result to every pod as `config.json`
(finetune_api.trainer_config.TrainerConfig, the operator -> trainer contract). Paths are resolved here against
the volume mounts, so the trainer never needs to know it runs in Kubernetes.
"""

from __future__ import annotations

import posixpath
from typing import Optional

from finetune_api.contract import METRICS_PORT, TERMINATION_LOG, UserError
from finetune_api.job import FineTuneJob, ObjectMeta
from finetune_api.loading import SpecError
from finetune_api.trainer_config import Rendezvous, TrainerConfig
from finetune_plan import Machine, plan_launch
from finetune_plan.catalog import shape_for_hub_id
from finetune_plan.memory import GiB, parse_bytes

from . import names

MODEL_MOUNT = "/mnt/model"
DATA_MOUNT = "/mnt/data"
OUTPUT_MOUNT = "/mnt/output"
CONFIG_DIR = "/etc/finetune"
CONFIG_FILE = "config.json"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_FILE}"
RDZV_PORT = 29500


class RenderError(SpecError):
    """A valid spec that cannot run in a cluster as written; the message names the field and the fix."""

    def __init__(self, message: str):
        super().__init__([message])


def gpus_per_pod(job: FineTuneJob) -> int:
    """GPUs each pod requests: `auto` means 1 in a cluster; 0 means a CPU-only run."""
    want = job.spec.distributed.gpus_per_node
    return 1 if want == "auto" else int(want)


def nproc_per_pod(job: FineTuneJob) -> int:
    """Processes the trainer's launcher starts in each pod: one per GPU, or one CPU process."""
    return max(1, gpus_per_pod(job))


def resolve_path(path: Optional[str], mount: str, has_volume: bool, field: str) -> Optional[str]:
    """Where `path` is seen inside the pod.

    Args:
        path: the spec's path (None passes through).
        mount: where the field's volume is mounted.
        has_volume: whether the spec gives a volume for it.
        field: the spec field, named in errors.

    Returns:
        `mount/path` inside a volume; without one, an absolute path as-is (baked into the image).

    Raises:
        RenderError: a relative path with no volume to be relative to, or a path that leaves its volume.
    """
    if path is None:
        return None
    if has_volume:
        resolved = posixpath.normpath(posixpath.join(mount, path.lstrip("/")))
        if resolved != mount and not resolved.startswith(mount + "/"):
            raise RenderError(f"{field} {path!r} leaves its volume (it would be {resolved} in the pod, outside "
                              f"{mount}); give a path inside the volume, without '..'")
        return resolved
    if not path.startswith("/"):
        raise RenderError(
            f"{field} is the relative path {path!r} but no volume is given for it: in a cluster set the "
            f"matching volume (a PersistentVolumeClaim) or use an absolute path inside the image"
        )
    return posixpath.normpath(path)


def check_output_on_volume(cfg: TrainerConfig) -> None:
    """Refuse an output the pod cannot keep: without an output volume only /tmp (an emptyDir) is writable — the
    trainer's root filesystem is read-only — and what is written there is lost with the pod (smoke tests only).

    Raises:
        RenderError: names spec.output.path and what to set.
    """
    out = cfg.output_dir
    if cfg.job.spec.output.volume is None and out != "/tmp" and not out.startswith("/tmp/"):
        raise RenderError(f"spec.output.path {out!r} is not on a volume: the trainer's root filesystem is "
                          f"read-only and results written outside a volume are lost with the pod; set "
                          f"spec.output.volume (claimName, or create: {{size: 20Gi}})")


def check_output_path(output_dir: str, inputs: dict[str, Optional[str]]) -> None:
    """Refuse an output folder that is (or holds) the model's folder or a data path.

    Raises:
        RenderError: names spec.output.path and the input.
    """
    for field, value in inputs.items():
        if value and (value == output_dir or value.startswith(output_dir.rstrip("/") + "/")):
            raise RenderError(f"spec.output.path {output_dir!r} is also {field} (or holds it); the trainer would "
                              "write over its own input: choose another output path")


def build_trainer_config(job: FineTuneJob) -> TrainerConfig:
    """The TrainerConfig every pod of `job` reads from its ConfigMap.

    Only the name and namespace of the metadata are kept, and `suspend` is cleared: the file must not change
    when tools annotate the object or a user suspends it (the ConfigMap is immutable).

    Raises:
        RenderError: a path cannot be resolved inside the pod, or the output is not on a volume or is an input.
    """
    spec = job.spec
    model_vol = spec.model.volume is not None
    data_vol = spec.dataset.volume is not None
    out_vol = spec.output.volume is not None
    nodes = spec.distributed.nodes
    nproc = nproc_per_pod(job)
    pinned = job.model_copy(update={
        "metadata": ObjectMeta(name=job.metadata.name, namespace=job.metadata.namespace),
        "spec": spec.model_copy(update={"suspend": False}),
        "status": None,
    })
    device = "cuda" if gpus_per_pod(job) > 0 else "cpu"
    shape = shape_for_hub_id(spec.model.hub_id)  # well-known hub models: their disk can be planned here
    try:  # no GPU size here (and no model shape for other models): what needs them is left to the pod's launcher
        plan = plan_launch(job, Machine(device=device, nodes=nodes, nproc_per_node=nproc), shape)
    except UserError as e:
        raise RenderError(str(e)) from None
    ns = job.metadata.namespace or "default"
    output_dir = resolve_path(spec.output.path, OUTPUT_MOUNT, out_vol, "spec.output.path")
    model_path = resolve_path(spec.model.path, MODEL_MOUNT, model_vol, "spec.model.path")
    data_paths = [resolve_path(p, DATA_MOUNT, data_vol, "spec.dataset.paths") for p in spec.dataset.paths] \
        if spec.dataset.paths else None
    check_output_path(output_dir, {"spec.model.path": model_path,
                                            **{f"spec.dataset.paths[{i}]": p for i, p in enumerate(data_paths or [])}})
    return TrainerConfig(
        job=pinned,
        model_path=model_path,
        dataset_paths=data_paths,
        validation_paths=[resolve_path(p, DATA_MOUNT, data_vol, "spec.dataset.validationPaths")
                          for p in spec.dataset.validation_paths] if spec.dataset.validation_paths else None,
        output_dir=output_dir,
        plan=plan,
        rendezvous=Rendezvous(host=names.master_addr(job.metadata.name, ns), port=RDZV_PORT) if nodes > 1 else None,
        metrics_port=METRICS_PORT,
        termination_log=TERMINATION_LOG,
    )


SPARE = 1.25  # a created output volume holds the planned peak plus a quarter


def planned_volume_size(cfg: TrainerConfig) -> Optional[str]:
    """The size of an output volume the operator creates, from the launch plan's disk need (None: unknown)."""
    if cfg.plan.disk is None:
        return None
    return f"{max(1, -(-int(cfg.plan.disk.peak_bytes * SPARE) // GiB))}Gi"


def volume_shortfall(capacity: str, cfg: TrainerConfig) -> Optional[str]:
    """A warning when an output volume of `capacity` (a quantity) is smaller than the plan's peak, else None."""
    if cfg.plan.disk is None:
        return None
    have, need = parse_bytes(capacity), cfg.plan.disk.peak_bytes
    if have >= need:
        return None
    return (f"the output volume ({capacity}) is smaller than this run needs at its peak ({need / GiB:.1f} GiB: "
            f"{cfg.plan.disk.checkpoint_bytes / GiB:.1f} GiB per checkpoint, {cfg.plan.disk.output_bytes / GiB:.1f} GiB "
            "of output); the run will stop when the disk is full. Give the volume more space, keep fewer "
            "checkpoints (spec.output.keepLastCheckpoints) or save less often")
