"""Names, labels and owner references of the objects a FineTuneJob owns.

Why a module of its own: every child must be found again by name after an operator restart (create-if-absent
is keyed by name), selected by label (the Service selects the trainer pods, the handlers watch pods and Jobs
by `finetune.io/job-name`), and deleted with its owner (owner references). If two places spelled a name
differently, a restart would create duplicates. All functions here are pure and deterministic.
"""

from __future__ import annotations

import hashlib

from finetune_api.job import API_VERSION, KIND

JOB_NAME_LABEL = "finetune.io/job-name"
COMPONENT_LABEL = "app.kubernetes.io/component"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
MANAGED_BY = "finetune-operator"
TRAINER_CONTAINER = "trainer"

# Label and annotation prefixes that belong to tools, not to the user: never copied onto children.
_PRIVATE_PREFIXES = ("kubectl.kubernetes.io/", "kopf.zalando.org/", "finetune.io/", "app.kubernetes.io/")

# Pods of an Indexed Job are named `<job>-<index>` as hostnames (a DNS label, 63 chars): leave room for 4 digits.
_JOB_NAME_MAX = 58


def _fit(base: str, suffix: str = "", limit: int = 63) -> str:
    """`base + suffix`, shortened with a stable hash when longer than `limit` (so names stay unique)."""
    name = base + suffix
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    keep = limit - len(suffix) - 7
    return f"{base[:keep].rstrip('-')}-{digest}{suffix}"


def job_name(name: str) -> str:
    """The Indexed Job (and the hostname prefix of its pods)."""
    return _fit(name, "", _JOB_NAME_MAX)


def service_name(name: str) -> str:
    """The headless rendezvous Service (a DNS-1035 label: it must start with a letter)."""
    base = name if name[0].isalpha() else f"ftj-{name}"
    return _fit(base, "")


def configmap_name(name: str) -> str:
    """The ConfigMap holding config.json (the TrainerConfig)."""
    return _fit(name, "-config", 253)


def service_account_name(name: str) -> str:
    """The trainer pods' ServiceAccount (no API rights, no token mounted)."""
    return _fit(name, "-trainer", 253)


def output_pvc_name(name: str) -> str:
    """The output PersistentVolumeClaim the operator creates when `spec.output.volume.create` is set."""
    return _fit(name, "-output", 253)


def master_addr(name: str, namespace: str) -> str:
    """DNS name of pod 0 (node rank 0) through the headless Service: `<job>-0.<service>.<ns>.svc`."""
    return f"{job_name(name)}-0.{service_name(name)}.{namespace}.svc"


def selector_labels(name: str) -> dict[str, str]:
    """Labels that select the trainer pods of one FineTuneJob (the Service's selector)."""
    return {JOB_NAME_LABEL: name, COMPONENT_LABEL: "trainer"}


def labels(name: str, component: str) -> dict[str, str]:
    """The recommended `app.kubernetes.io/*` labels plus `finetune.io/job-name` for one child."""
    return {
        "app.kubernetes.io/name": "finetune-job",
        "app.kubernetes.io/instance": name,
        COMPONENT_LABEL: component,
        "app.kubernetes.io/part-of": "finetune-operator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        JOB_NAME_LABEL: name,
    }


def user_metadata(values: dict[str, str]) -> dict[str, str]:
    """The user's labels or annotations that children inherit: all but tools' own keys."""
    return {k: v for k, v in sorted(values.items()) if not k.startswith(_PRIVATE_PREFIXES)}


def owner_reference(name: str, uid: str) -> dict:
    """The owner reference that makes a child part of the FineTuneJob (and deleted with it)."""
    return {"apiVersion": API_VERSION, "kind": KIND, "name": name, "uid": uid,
            "controller": True, "blockOwnerDeletion": True}
