"""What the operator knows of the cluster: kopf indexes fed by its watches, and the World of one job built from them.

Why indexes (kopf's "mirroring resources"): a reconcile used to re-GET the FineTuneJob and its Job and LIST its pods
on every event - three requests per pod change, thousands a minute at 1,000 jobs. Instead, each watched kind is kept
in memory as kopf delivers it, keyed by the owning FineTuneJob, trimmed to the fields the operator reads (status
mapping, ownership, retry accounting), and a reconcile reads only memory. The watches are label-selected on the
server (`finetune.io/job-name`, handlers.py), so the operator never receives anyone else's pods.

The Job controller's FailedCreate events (a pod that cannot be created: no PriorityClass, no quota) are indexed by
the Job they are about; a field selector on the server keeps that watch to those events only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import kopf

from finetune_api.job import GROUP, PLURAL, VERSION

from . import names
from .reconcile import Child, World

LABELS = {names.JOB_NAME_LABEL: kopf.PRESENT}
CHILD_KINDS = {"serviceaccounts": "ServiceAccount", "configmaps": "ConfigMap", "services": "Service",
               "persistentvolumeclaims": "PersistentVolumeClaim"}
_POD_NOTES = ("batch.kubernetes.io/",)


def _pick(d: Optional[Mapping], *keys: str) -> dict:
    return {k: d[k] for k in keys if d and d.get(k) is not None}


def trim_ftj(body: Mapping) -> dict:
    meta = body.get("metadata") or {}
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
            "metadata": _pick(meta, "name", "namespace", "uid", "generation", "resourceVersion", "labels",
                              "annotations", "deletionTimestamp", "creationTimestamp"),
            "spec": dict(body.get("spec") or {}), "status": dict(body.get("status") or {})}


def trim_job(body: Mapping) -> dict:
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    return {"metadata": _pick(meta, "name", "namespace", "uid", "labels", "ownerReferences", "creationTimestamp"),
            "spec": _pick(spec, "suspend", "backoffLimit", "parallelism", "completions"),
            "status": dict(body.get("status") or {})}


def trim_pod(body: Mapping) -> dict:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    notes = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(_POD_NOTES)}
    containers = [_pick(c, "name", "image", "resources") for c in spec.get("containers") or []]
    return {"metadata": _pick(meta, "name", "uid", "ownerReferences", "creationTimestamp", "deletionTimestamp")
            | {"annotations": notes},
            "spec": {"containers": containers, **_pick(spec, "nodeName")},
            "status": _pick(status, "phase", "conditions", "containerStatuses", "podIP", "startTime")}


def _owner_uids(body: Mapping) -> frozenset:
    return frozenset(r.get("uid") for r in (body.get("metadata") or {}).get("ownerReferences") or [])


# ------------------------------------------------------------------ the indexes (kopf passes each by its name)

@kopf.index(GROUP, VERSION, PLURAL)
def ftj_index(namespace: str, name: str, body: kopf.Body, **_) -> dict:
    """(namespace, name) -> the FineTuneJob."""
    return {(namespace, name): trim_ftj(body)}


@kopf.index("batch", "v1", "jobs", labels=LABELS)
def job_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_) -> dict:
    """(namespace, FineTuneJob name) -> its trainer Job."""
    return {(namespace, labels[names.JOB_NAME_LABEL]): trim_job(body)}


@kopf.index("batch", "v1", "jobs", labels=LABELS)
def job_owner_index(namespace: str, name: str, labels: kopf.Labels, **_) -> dict:
    """(namespace, Job name) -> the FineTuneJob name (Events name the Job, not its owner)."""
    return {(namespace, name): labels[names.JOB_NAME_LABEL]}


@kopf.index("v1", "pods", labels=LABELS)
def pod_index(namespace: str, labels: kopf.Labels, body: kopf.Body, **_) -> dict:
    """(namespace, FineTuneJob name) -> its trainer pods."""
    return {(namespace, labels[names.JOB_NAME_LABEL]): trim_pod(body)}


def _child_index(plural: str, kind: str):
    def index(namespace: str, name: str, labels: kopf.Labels, body: kopf.Body, **_) -> dict:
        return {(namespace, labels[names.JOB_NAME_LABEL]): (kind, name, _owner_uids(body), dict(labels))}

    index.__name__ = index.__qualname__ = f"{plural}_index"
    index.__doc__ = f"(namespace, FineTuneJob name) -> its {kind}s."
    return kopf.index("v1", plural, labels=LABELS, id=f"{plural}_index")(index)


for _plural, _kind in CHILD_KINDS.items():
    globals()[f"{_plural}_index"] = _child_index(_plural, _kind)


@kopf.index("v1", "events")
def failed_create_index(namespace: str, body: kopf.Body, **_) -> Optional[dict]:
    """(namespace, Job name) -> (when, message) of the Job controller's FailedCreate events."""
    obj = body.get("involvedObject") or {}
    if body.get("reason") != "FailedCreate" or obj.get("kind") != "Job":
        return None
    when = body.get("lastTimestamp") or body.get("eventTime") or (body.get("metadata") or {}).get("creationTimestamp")
    return {(namespace, obj.get("name")): (when or "", body.get("message") or "")}


# ------------------------------------------------------------------ the World of one job

def values(index: Optional[Mapping], key: Any) -> list:
    if index is None or key not in index:
        return []
    return list(index[key])


def snapshot(indexes: Mapping[str, Mapping], key: tuple[str, str], progress: Any = None) -> Optional[World]:
    """The World of FineTuneJob `key` as the watches last saw it; None when it is gone."""
    found = values(indexes.get("ftj_index"), key)
    if not found:
        return None
    ftj = found[0]
    namespace, name = key
    job_name = names.job_name(name)
    jobs = [j for j in values(indexes.get("job_index"), key) if j["metadata"].get("name") == job_name]
    job = jobs[0] if jobs else None
    children = {(kind, child): Child(owners=owners, labels=labels)
                for plural in CHILD_KINDS for kind, child, owners, labels in values(indexes.get(f"{plural}_index"), key)}
    if job is not None:
        children[("Job", job_name)] = Child(owners=_owner_uids(job), labels=job["metadata"].get("labels") or {})
    job_uid = (job or {}).get("metadata", {}).get("uid")
    pods = [p for p in values(indexes.get("pod_index"), key) if job_uid in _owner_uids(p)]
    failed_create = None
    newest_pod = max((p["metadata"].get("creationTimestamp") or "" for p in pods), default="")
    for when, message in sorted(values(indexes.get("failed_create_index"), (namespace, job_name))):
        if job is not None and when >= (job["metadata"].get("creationTimestamp") or "") and when >= newest_pod:
            failed_create = message  # not explained away by a pod created since
    return World(ftj=ftj, job=job, pods=pods, children=children, failed_create=failed_create, progress=progress)


def owner_of_job(indexes: Mapping[str, Mapping], namespace: str, job_name: str) -> Optional[str]:
    """The FineTuneJob name that owns Job `job_name`, if the watches saw that Job."""
    found = values(indexes.get("job_owner_index"), (namespace, job_name))
    return found[0] if found else None
