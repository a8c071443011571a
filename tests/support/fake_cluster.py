"""An in-memory stand-in for `finetune_operator.cluster.Cluster`, and builders for the objects a reconcile sees.

Why: the reconciler's decisions (create what is missing, never touch a finished job, delete removed status keys,
post each transition's Event once) are what must not regress, and a real API server takes seconds per case. The
fake keeps the semantics the decisions rely on - create answers 409 for a taken name, a status patch is an RFC 7386
merge patch, an Event name can be taken only once - and records every write, so a test can diff what happened.
Builders follow kueue's testing wrappers: `make_job(...)`, `make_pod(...)` return plain dicts a test tweaks.
"""

from __future__ import annotations

import copy
import itertools
from typing import Optional

from kubernetes.client import ApiException

from finetune_operator import names
from finetune_operator.indexes import trim_ftj
from finetune_operator.reconcile import Child, World

UID = "00000000-0000-4000-8000-000000000001"
NS = "team-a"


def merge(target: dict, patch: dict) -> dict:
    """RFC 7386, as the API server applies a merge patch."""
    out = copy.deepcopy(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class FakeCluster:
    """Objects by (kind, name), the FineTuneJob's status, Events by name; every write recorded in `calls`."""

    def __init__(self, ftj: dict, fail_on: Optional[dict] = None, kueue: tuple = (False, None),
                 objects: Optional[dict] = None):
        self.ftj = copy.deepcopy(ftj)
        self.objects: dict[tuple[str, str], dict] = copy.deepcopy(objects or {})
        self.kueue = kueue  # (Kueue installed, the Job's Workload)
        self.events: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.fail_on = fail_on or {}  # call name -> ApiException status to raise
        self._rv = itertools.count(int(self.ftj["metadata"].get("resourceVersion", 1)) + 1)

    def _maybe_fail(self, call: str) -> None:
        if call in self.fail_on:
            raise ApiException(status=self.fail_on[call], reason="Injected")

    def create(self, manifest: dict) -> bool:
        self.calls.append(("create", manifest["kind"], manifest["metadata"]["name"]))
        self._maybe_fail("create")
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in self.objects:
            return False
        self.objects[key] = copy.deepcopy(manifest)
        return True

    def read(self, kind: str, namespace: str, name: str) -> Optional[dict]:
        self.calls.append(("read", kind, name))
        return copy.deepcopy(self.objects.get((kind, name)))

    def set_job_suspend(self, namespace: str, job: str, suspend: bool) -> None:
        self.calls.append(("suspend", job, suspend))

    def stop_pod(self, namespace: str, name: str, uid: str, failed_peer: str) -> None:
        self.calls.append(("stop_pod", name, failed_peer))

    def workload(self, namespace: str, job_uid: str) -> tuple[bool, Optional[dict]]:
        self.calls.append(("read_workload", job_uid))
        return self.kueue[0], copy.deepcopy(self.kueue[1])

    def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        self.calls.append(("workload_active", active))

    def set_owner(self, kind: str, namespace: str, name: str, owner: dict) -> None:
        self.calls.append(("set_owner", kind, name, owner["uid"]))

    def patch_status(self, namespace: str, name: str, patch: dict) -> Optional[dict]:
        self.calls.append(("patch_status",))
        self._maybe_fail("patch_status")
        self.ftj["status"] = merge(self.ftj.get("status") or {}, patch)
        self.ftj["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(self.ftj)

    def post_event(self, ftj: dict, event, name: str, now: str) -> bool:
        self.calls.append(("event", event.type, event.reason))
        if name in self.events:
            return False
        self.events[name] = {"type": event.type, "reason": event.reason, "message": event.message}
        return True

    def writes(self, kind: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == kind]


def make_ftj(name: str = "demo", status: Optional[dict] = None, rv: int = 10, labels: Optional[dict] = None,
             **spec) -> dict:
    """A FineTuneJob as the watch delivers it (after the API server's defaulting)."""
    body = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": NS, "uid": UID, "generation": 1, "resourceVersion": str(rv),
                         "labels": labels or {}},
            "spec": {"model": {"path": "/opt/models/tiny"},
                     "dataset": {"paths": ["/opt/data/train.jsonl"], "format": "messages"},
                     "output": {"path": "/tmp/out"}} | spec,
            "status": status or {}}
    return trim_ftj(body)


def make_job(name: str = "demo", suspend: bool = False, conditions=(), failed: int = 0, labels=None, owner=UID) -> dict:
    return {"metadata": {"name": names.job_name(name), "namespace": NS, "uid": "job-uid",
                         "labels": {names.JOB_NAME_LABEL: name, **(labels or {})},
                         "ownerReferences": [{"uid": owner}], "creationTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"suspend": suspend, "backoffLimit": 3, "parallelism": 1},
            "status": {"failed": failed, "startTime": "2025-01-01T00:00:01Z",
                       "conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                                      for t, r, m in conditions]}}


def make_pod(index: str = "0", phase: str = "Running", name: Optional[str] = None, created="2025-01-01T00:00:02Z",
             term: Optional[dict] = None, waiting: Optional[dict] = None, failures: int = 0, ignored: int = 0,
             deleting: bool = False) -> dict:
    notes = {"batch.kubernetes.io/job-completion-index": index,
             "batch.kubernetes.io/job-index-failure-count": str(failures)}
    if ignored:
        notes["batch.kubernetes.io/job-index-ignored-failure-count"] = str(ignored)
    state = {"terminated": term} if term is not None else {"waiting": waiting} if waiting else {"running": {}}
    pod = {"metadata": {"name": name or f"demo-{index}-{phase.lower()[:3]}{failures + ignored}", "uid": f"pod-{index}-{created}",
                        "annotations": notes, "ownerReferences": [{"uid": "job-uid"}], "creationTimestamp": created},
           "spec": {"containers": [{"name": "trainer", "image": "img:1",
                                    "resources": {"requests": {"cpu": "4", "nvidia.com/gpu": "1"}}}]},
           "status": {"phase": phase, "conditions": [],
                      "containerStatuses": [{"name": "trainer", "state": state}]}}
    if deleting:
        pod["metadata"]["deletionTimestamp"] = "2025-01-01T00:09:00Z"
    return pod


def all_children(name: str = "demo", owner: str = UID, pvc: bool = False) -> dict:
    kids = {("ServiceAccount", names.service_account_name(name)): Child(frozenset({owner})),
            ("ConfigMap", names.configmap_name(name)): Child(frozenset({owner})),
            ("Service", names.service_name(name)): Child(frozenset({owner})),
            ("Job", names.job_name(name)): Child(frozenset({owner}))}
    if pvc:
        kids[("PersistentVolumeClaim", names.output_pvc_name(name))] = Child(frozenset({owner}))
    return kids


def world(ftj: dict, job: Optional[dict] = None, pods=(), children: Optional[dict] = None, **kw) -> World:
    kids = children if children is not None else (all_children(ftj["metadata"]["name"]) if job is not None else {})
    return World(ftj=ftj, job=job, pods=list(pods), children=kids, **kw)
