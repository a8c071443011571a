"""The Indexed Job that runs the trainer: one pod per node, the trainer's launcher inside, rendezvous at pod 0.

Why an Indexed Job (and not a bare pod set or a JobSet): Kubernetes gives each pod a stable index
(`JOB_COMPLETION_INDEX`, the launcher's node rank) and a stable hostname `<job>-<index>` under the headless
Service (`spec.template.spec.subdomain`), retries pods with a failure policy, can be suspended (which is also
how Kueue admits work), and the controller-manager already reconciles it. The operator renders it once.

Pod hardening follows the restricted Pod Security Standard: non-root, no privilege escalation, all
capabilities dropped, seccomp RuntimeDefault, read-only root filesystem (writable /tmp and /dev/shm), no
ServiceAccount token. Secrets only by reference (`secretKeyRef`).
"""

from __future__ import annotations

import copy

from finetune_api.contract import METRICS_PORT, TERMINATION_LOG
from finetune_api.job import FineTuneJob

from . import names
from .failure_policy import job_failure_spec
from .pod_config import CONFIG_DIR, CONFIG_PATH, DATA_MOUNT, MODEL_MOUNT, OUTPUT_MOUNT, RDZV_PORT, gpus_per_pod

TRAINER_UID = 1000
TRAINER_COMMAND = "finetune-train"  # the trainer image's launcher: plans, starts and watches the workers


def _volumes(job: FineTuneJob) -> tuple[list[dict], list[dict]]:
    """(pod volumes, container mounts): config, /dev/shm, /tmp, and model/data/output when on volumes."""
    spec, name = job.spec, job.metadata.name
    vols = [
        {"name": "config", "configMap": {"name": names.configmap_name(name)}},
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.resources.shared_memory}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    # One pod volume per claim, however many mounts use it: a kubelet never starts a pod that names one claim in
    # two volumes (kubernetes/kubernetes#51853: ContainerCreating for ever); seen on the cluster tier's real node.
    by_claim: dict[str, dict] = {}

    def volume_for(claim: str, vol_name: str, read_only: bool) -> str:
        vol = by_claim.get(claim)
        if vol is None:
            source = {"claimName": claim} | ({"readOnly": True} if read_only else {})
            vol = by_claim[claim] = {"name": vol_name, "persistentVolumeClaim": source}
            vols.append(vol)
        elif not read_only:
            vol["persistentVolumeClaim"].pop("readOnly", None)  # the output is written; inputs' mounts stay read-only
        return vol["name"]

    inputs = (("model", spec.model.volume, MODEL_MOUNT), ("data", spec.dataset.volume, DATA_MOUNT))
    for vol_name, src, mount in inputs:
        if src is None:
            continue
        mounts.append({"name": volume_for(src.claim_name, vol_name, True), "mountPath": mount, "readOnly": True}
                      | ({"subPath": src.sub_path} if src.sub_path else {}))
    out = spec.output.volume
    if out is not None:
        claim = out.claim_name or names.output_pvc_name(name)
        mounts.append({"name": volume_for(claim, "output", False), "mountPath": OUTPUT_MOUNT})
    return vols, mounts


def _env(job: FineTuneJob) -> list[dict]:
    """Environment: the config path, writable homes/caches, and the HF token by reference only."""
    env = [
        {"name": "FINETUNE_CONFIG", "value": CONFIG_PATH},
        {"name": "HOME", "value": "/tmp"},
        {"name": "HF_HOME", "value": "/tmp/hf"},
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    ref = job.spec.hf_token_secret_ref
    if ref is not None:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    return env


def _resources(job: FineTuneJob) -> dict:
    """Requests and limits; GPUs (an extended resource) must have request == limit."""
    res = job.spec.resources
    requests = {"cpu": res.cpu, "memory": res.memory}
    limits = {"memory": res.memory}
    gpus = gpus_per_pod(job)
    if gpus > 0:
        requests[res.gpu_resource_name] = str(gpus)
        limits[res.gpu_resource_name] = str(gpus)
    return {"requests": requests, "limits": limits}


def _command(job: FineTuneJob) -> list[str]:
    """The launcher reads processes, node rank (JOB_COMPLETION_INDEX) and rendezvous from its config."""
    return [TRAINER_COMMAND, "--config", CONFIG_PATH]


def build_pod_template(job: FineTuneJob, image: str) -> dict:
    """The trainer pod template (labels, hardening, volumes, placement passed through from the spec)."""
    spec, name = job.spec, job.metadata.name
    vols, mounts = _volumes(job)
    container = {
        "name": names.TRAINER_CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": _command(job),
        "env": _env(job),
        "ports": [{"name": "rdzv", "containerPort": RDZV_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": _resources(job),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False, "privileged": False, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict = {
        "restartPolicy": "Never",
        "subdomain": names.service_name(name),
        "serviceAccountName": names.service_account_name(name),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": TRAINER_UID, "runAsGroup": TRAINER_UID, "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": vols,
    }
    sched = spec.scheduling
    tolerations = [t.to_wire() for t in sched.tolerations] if sched.tolerations is not None else None
    passthrough = {"nodeSelector": sched.node_selector, "tolerations": tolerations,
                   "affinity": sched.affinity, "priorityClassName": sched.priority_class_name}
    pod_spec |= {k: copy.deepcopy(v) for k, v in passthrough.items() if v is not None}
    return {
        "metadata": {
            "labels": names.user_metadata(job.metadata.labels) | names.labels(name, "trainer"),
            "annotations": names.user_metadata(job.metadata.annotations),
        },
        "spec": pod_spec,
    }


def build_job(job: FineTuneJob, *, uid: str, image: str) -> dict:
    """The batch/v1 Indexed Job running `spec.distributed.nodes` trainer pods.

    Args:
        job: the validated FineTuneJob (metadata.namespace set).
        uid: the FineTuneJob's uid, for the owner reference.
        image: the trainer image (spec.image wins over the operator's default).

    Returns:
        The Job manifest, with the retry policy of failure_policy.py: exit code 2 (bad user input) fails the
        Job at once; SIGTERM (143) and pod disruptions (preemption, a lost node) do not count against the retry
        budget; the trainer resumes from its last checkpoint on a retried pod.
    """
    name = job.metadata.name
    nodes = job.spec.distributed.nodes
    # The user's labels include `kueue.x-k8s.io/queue-name`: Kueue then admits the Job by unsuspending it.
    job_labels = names.user_metadata(job.metadata.labels) | names.labels(name, "trainer")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": names.job_name(name), "namespace": job.metadata.namespace,
                     "labels": job_labels, "ownerReferences": [names.owner_reference(name, uid)]},
        "spec": {
            "completionMode": "Indexed",
            "completions": nodes,
            "parallelism": nodes,
            "suspend": bool(job.spec.suspend),
            **job_failure_spec(),
            "template": build_pod_template(job, image),
        },
    }
