"""Spec in, manifests out: every object the operator creates for one FineTuneJob.

Why pure: the same function backs `finetune render job.yaml` (users and tests see the objects without a
cluster) and the operator's create handler (which only applies what this returns). No I/O, no clock, no
randomness: the same job and uid always give the same manifests, which is what makes create-if-absent after an
operator restart a no-op. Inputs are never mutated.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from finetune_api.contract import METRICS_PORT
from finetune_api.job import FineTuneJob

from . import names
from .pod_config import CONFIG_FILE, RDZV_PORT, RenderError, build_trainer_config, check_output_on_volume, planned_volume_size
from .workload import build_job

DEFAULT_TRAINER_IMAGE = "ghcr.io/finetune-operator/trainer:0.1.0"
IMAGE_ENV = "FINETUNE_TRAINER_IMAGE"

__all__ = ["DEFAULT_TRAINER_IMAGE", "RenderError", "build_configmap", "build_job", "build_output_pvc",
           "build_service", "build_service_account", "default_image", "render_children"]


def default_image() -> str:
    """The operator's trainer image: $FINETUNE_TRAINER_IMAGE (set by the Helm chart), else the release's."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_TRAINER_IMAGE


def _meta(job: FineTuneJob, name: str, component: str, uid: str) -> dict:
    return {
        "name": name,
        "namespace": job.metadata.namespace,
        "labels": names.user_metadata(job.metadata.labels) | names.labels(job.metadata.name, component),
        "ownerReferences": [names.owner_reference(job.metadata.name, uid)],
    }


def build_configmap(job: FineTuneJob, *, uid: str) -> dict:
    """The immutable ConfigMap with `config.json` (the TrainerConfig) and `launch.json` (the plan, for people).

    Raises:
        RenderError: the spec cannot run in a cluster as written (e.g. a relative path without a volume).
    """
    cfg = build_trainer_config(job)
    check_output_on_volume(cfg)
    name = job.metadata.name
    launch = cfg.plan.to_wire() | {
        "worldSize": cfg.world_size, "outputDir": cfg.output_dir,
        "rendezvous": f"{cfg.rendezvous.host}:{cfg.rendezvous.port}" if cfg.rendezvous else "standalone",
        "metricsPort": METRICS_PORT,
        "decidedOnTheNode": [k for k in ("strategy", "microBatch", "gradientAccumulation", "checkpointing")
                             if k not in cfg.plan.to_wire()],
    }
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(job, names.configmap_name(name), "config", uid),
        "immutable": True,
        "data": {CONFIG_FILE: cfg.to_json(),
                 "launch.json": json.dumps(launch, indent=2, sort_keys=True)},
    }


def build_service(job: FineTuneJob, *, uid: str) -> dict:
    """The headless Service that gives pod `<job>-<i>` a DNS name (rendezvous at pod 0) and names the ports."""
    name = job.metadata.name
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(job, names.service_name(name), "rendezvous", uid),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,  # rendezvous happens before any pod is Ready
            "selector": names.selector_labels(name),
            "ports": [{"name": "rdzv", "port": RDZV_PORT, "targetPort": RDZV_PORT, "protocol": "TCP"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT, "protocol": "TCP"}],
        },
    }


def build_service_account(job: FineTuneJob, *, uid: str) -> dict:
    """The trainer pods' identity: bound to no Role, its token never mounted."""
    return {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": _meta(job, names.service_account_name(job.metadata.name), "trainer", uid),
        "automountServiceAccountToken": False,
    }


def build_output_pvc(job: FineTuneJob, *, uid: str) -> Optional[dict]:
    """The output claim when `spec.output.volume.create` asks for one, else None.

    It holds the trained weights, so by default (`whenDeleted: Retain`, like a StatefulSet's claims) it carries no
    owner reference: deleting the FineTuneJob leaves it, and a new FineTuneJob of the same name finds it by name and
    resumes from its checkpoints. `whenDeleted: Delete` makes it owned, and the garbage collector deletes it with
    the job (no finalizer needed: this works while the operator is down).
    """
    vol = job.spec.output.volume
    if vol is None or vol.create is None:
        return None
    size = vol.create.size or planned_volume_size(build_trainer_config(job))
    if size is None:
        raise RenderError(
            "spec.output.volume.create.size: the operator cannot plan the disk of this model (only well-known hub "
            "models' sizes are known before a pod runs); give a size — `finetune plan job.yaml` prints the disk a "
            "run needs")
    spec: dict = {"accessModes": ["ReadWriteMany" if job.spec.distributed.nodes > 1 else "ReadWriteOnce"],
                  "resources": {"requests": {"storage": size}}}
    if vol.create.storage_class_name:
        spec["storageClassName"] = vol.create.storage_class_name
    meta = _meta(job, names.output_pvc_name(job.metadata.name), "output", uid)
    if vol.create.when_deleted == "Retain":
        del meta["ownerReferences"]
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def render_children(job: FineTuneJob, *, uid: str, image: Optional[str] = None) -> list[dict]:
    """Every child of `job`, in creation order (the Job last: its pods need the others).

    Args:
        job: the validated FineTuneJob; `metadata.namespace` defaults to `default`.
        uid: the FineTuneJob's uid (owner references).
        image: the operator's default trainer image; `spec.image` wins over it.

    Returns:
        ServiceAccount, ConfigMap, Service, [output PVC], Job manifests as dicts; all carry the owner reference
        but a retained output PVC.

    Raises:
        RenderError: the spec cannot run in a cluster as written; the message names the field.
    """
    if not job.metadata.namespace:
        job = job.model_copy(update={"metadata": job.metadata.model_copy(update={"namespace": "default"})})
    image = job.spec.image or image or default_image()
    children = [build_service_account(job, uid=uid), build_configmap(job, uid=uid), build_service(job, uid=uid)]
    pvc = build_output_pvc(job, uid=uid)
    if pvc is not None:
        children.append(pvc)
    children.append(build_job(job, uid=uid, image=image))
    return children
