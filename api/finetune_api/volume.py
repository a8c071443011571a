"""References to Kubernetes volumes and Secrets: the only way a spec points at storage or credentials.

Secrets are referenced, never inlined: the spec holds a Secret's name and key, the pod reads the value
through `secretKeyRef`, and no ConfigMap, status, event or log line ever carries it.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import SpecModel
from .kube_types import DNS_SUBDOMAIN as _DNS_LABEL
from .kube_types import NO_NUL, SECRET_KEY


class VolumeSource(SpecModel):
    """An existing PersistentVolumeClaim, mounted read-only for inputs."""

    claim_name: str = Field(
        ..., max_length=253, pattern=_DNS_LABEL, description="Name of a PersistentVolumeClaim in the job's namespace."
    )
    sub_path: Optional[str] = Field(None, max_length=4096, pattern=NO_NUL,
                                    description="Sub-directory of the volume to mount (relative, no '..').")


class NewVolume(SpecModel):
    """A PersistentVolumeClaim the operator creates for the output; kept when the FineTuneJob is deleted, by default."""

    size: Optional[str] = Field(
        None, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|K|M|G|T|P)?$",
        description="Requested storage, a Kubernetes quantity such as `50Gi`. Unset: the disk the launch plan "
        "needs (checkpoints kept plus the output, with a quarter spare), for models whose size the operator "
        "knows (well-known hub ids); `finetune plan` prints the figure for any other.",
    )
    storage_class_name: Optional[str] = Field(
        None, max_length=253, pattern=_DNS_LABEL, description="StorageClass of the new claim; the cluster default when unset."
    )
    when_deleted: Literal["Retain", "Delete"] = Field(
        "Retain",
        description="What happens to the claim (and the trained weights on it) when the FineTuneJob is deleted, "
        "like a StatefulSet's persistentVolumeClaimRetentionPolicy: `Retain` keeps it (a new FineTuneJob of the "
        "same name reuses it and resumes from its checkpoints; `kubectl delete pvc` frees it), `Delete` lets "
        "Kubernetes delete it with the job.",
    )


class OutputVolume(SpecModel):
    """Where the output lives in a cluster: an existing claim or one the operator creates."""

    claim_name: Optional[str] = Field(
        None, max_length=253, pattern=_DNS_LABEL,
        description="An existing PersistentVolumeClaim to write into. Exactly one of `claimName` and `create`.",
    )
    create: Optional[NewVolume] = Field(
        None, description="Have the operator create a claim for this job (kept after the job by default)."
    )


class SecretKeyRef(SpecModel):
    """A key of a Secret in the job's namespace."""

    name: str = Field(..., max_length=253, pattern=_DNS_LABEL, description="Name of the Secret.")
    key: str = Field("token", max_length=253, pattern=SECRET_KEY, description="Key inside the Secret.")
