"""The one module that talks to the Kubernetes API (the official `kubernetes` client).

Why a thin wrapper: handlers and the reconciler speak in manifests and dicts (exactly what `render` returns
and what `kubectl get -o json` shows), not in the client's generated model classes; reads therefore skip the
client's deserialisation. Everything that can fail on the network fails here, as `ApiException`.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import kubernetes
from kubernetes.client import ApiClient, ApiException, BatchV1Api, CoreV1Api, CustomObjectsApi

from finetune_api.job import GROUP, PLURAL, VERSION

from . import names
from .status import Event

REPORTING_COMPONENT = "finetune-operator"


class ChildConflict(Exception):
    """A child's name is taken by an object the FineTuneJob does not own."""


def api_client(pool_size: int = 32) -> ApiClient:
    """A client from the in-cluster ServiceAccount, else from $KUBECONFIG / ~/.kube/config."""
    cfg = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=cfg)
    except kubernetes.config.ConfigException:
        # $KUBECONFIG is read now, not at import time (the client's default is frozen when it is imported).
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None,
                                           client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return ApiClient(cfg)


def _json(resp) -> dict:
    return json.loads(resp.data)


class Cluster:
    """Reads and writes of FineTuneJobs and their children."""

    def __init__(self, client: Optional[ApiClient] = None):
        client = client or api_client()
        self.core, self.batch, self.custom = CoreV1Api(client), BatchV1Api(client), CustomObjectsApi(client)
        self._create = {
            "ServiceAccount": self.core.create_namespaced_service_account,
            "ConfigMap": self.core.create_namespaced_config_map,
            "Service": self.core.create_namespaced_service,
            "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
            "Job": self.batch.create_namespaced_job,
        }
        self._read = {
            "ServiceAccount": self.core.read_namespaced_service_account,
            "ConfigMap": self.core.read_namespaced_config_map,
            "Service": self.core.read_namespaced_service,
            "PersistentVolumeClaim": self.core.read_namespaced_persistent_volume_claim,
            "Job": self.batch.read_namespaced_job,
        }

    def create_if_absent(self, manifest: dict) -> bool:
        """Create `manifest` unless an object of that name exists; True if it was created.

        Raises:
            ChildConflict: the existing object is not owned by the same FineTuneJob (uid).
            ApiException: any other API error.
        """
        kind, meta = manifest["kind"], manifest["metadata"]
        try:
            self._create[kind](meta["namespace"], manifest)
            return True
        except ApiException as e:
            if e.status != 409:
                raise
        existing = self.read(kind, meta["namespace"], meta["name"]) or {}
        want = {r["uid"] for r in meta.get("ownerReferences", [])}
        have = {r.get("uid") for r in (existing.get("metadata") or {}).get("ownerReferences") or []}
        if want and not want & have:
            raise ChildConflict(f"{kind} {meta['namespace']}/{meta['name']} already exists and is not owned by "
                                f"this FineTuneJob; delete or rename it")
        return False

    def read(self, kind: str, namespace: str, name: str) -> Optional[dict]:
        """One child as a dict, or None when absent."""
        try:
            return _json(self._read[kind](name, namespace, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def get_ftj(self, namespace: str, name: str) -> Optional[dict]:
        """The FineTuneJob, or None when it is gone."""
        try:
            return _json(self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                                  _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list_ftjs(self) -> list[dict]:
        """Every FineTuneJob the operator may see."""
        return _json(self.custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _preload_content=False))["items"]

    def list_pods(self, namespace: str, ftj_name: str) -> list[dict]:
        """The trainer pods of one FineTuneJob (by label)."""
        sel = f"{names.JOB_NAME_LABEL}={ftj_name}"
        return _json(self.core.list_namespaced_pod(namespace, label_selector=sel, _preload_content=False))["items"]

    def set_job_suspend(self, namespace: str, job: str, suspend: bool) -> None:
        """Suspend (the Job controller deletes the pods) or resume the trainer Job; absent Jobs are ignored."""
        try:
            self.batch.patch_namespaced_job(job, namespace, {"spec": {"suspend": suspend}})
        except ApiException as e:
            if e.status != 404:
                raise

    def set_workload_active(self, namespace: str, job_uid: str, active: bool) -> bool:
        """Activate or deactivate the Kueue Workload of the Job `job_uid`; False when Kueue has made none (yet)."""
        from .kueue import WORKLOAD_GROUP, WORKLOAD_PLURAL, WORKLOAD_VERSION, workload_selector

        try:
            items = _json(self.custom.list_namespaced_custom_object(
                WORKLOAD_GROUP, WORKLOAD_VERSION, namespace, WORKLOAD_PLURAL, label_selector=workload_selector(job_uid),
                _preload_content=False))["items"]
        except ApiException as e:
            if e.status == 404:  # Kueue is not installed
                return False
            raise
        for wl in items:
            self.custom.patch_namespaced_custom_object(WORKLOAD_GROUP, WORKLOAD_VERSION, namespace, WORKLOAD_PLURAL,
                                                       wl["metadata"]["name"], {"spec": {"active": active}})
        return bool(items)

    def patch_status(self, namespace: str, name: str, status: dict) -> None:
        """Merge-patch the status subresource (None values delete keys)."""
        self.custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name,
                                                          {"status": status})

    def post_event(self, ftj: dict, event: Event, now: str) -> None:
        """A core/v1 Event on the FineTuneJob (what `kubectl describe ftj` and `kubectl get events` show)."""
        meta = ftj["metadata"]
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": ftj["apiVersion"], "kind": ftj["kind"], "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"],
                               "resourceVersion": meta.get("resourceVersion")},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT, "reportingInstance": REPORTING_COMPONENT,
            "action": "Reconcile", "firstTimestamp": now, "lastTimestamp": now, "eventTime": None, "count": 1,
        }
        self.core.create_namespaced_event(meta["namespace"], body)
