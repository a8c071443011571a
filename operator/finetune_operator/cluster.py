"""The one module that writes to the Kubernetes API (the official `kubernetes` client); reads come from kopf's indexes.

Why a thin wrapper: handlers and the reconciler speak in manifests and dicts (exactly what `render` returns and what
`kubectl get -o json` shows), not in the client's generated model classes. Everything that can fail on the network
fails here, as `ApiException`. The operator never GETs or LISTs per event: what it knows of the cluster is what its
watches delivered (handlers.py); the one read here resolves a name conflict that the watches have not explained.
Every write here is one the chart's ClusterRole grants, and tests/cluster/test_security.py fails on a verb granted
but never used.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import kubernetes
from kubernetes.client import ApiClient, ApiException, BatchV1Api, CoreV1Api, CustomObjectsApi

from finetune_api.job import GROUP, PLURAL, VERSION

from .failure_policy import STOPPED_FOR
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
    """Writes of FineTuneJob status and Events, and of the children."""

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

    def create(self, manifest: dict) -> bool:
        """Create `manifest`; False when an object of that name exists already (409).

        Raises:
            ApiException: any other API error.
        """
        try:
            self._create[manifest["kind"]](manifest["metadata"]["namespace"], manifest, _preload_content=False)
            return True
        except ApiException as e:
            if e.status != 409:
                raise
            return False

    def read(self, kind: str, namespace: str, name: str) -> Optional[dict]:
        """One child as a dict, or None when absent."""
        try:
            return _json(self._read[kind](name, namespace, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def set_job_suspend(self, namespace: str, job: str, suspend: bool) -> None:
        """Suspend (the Job controller deletes the pods) or resume the trainer Job; absent Jobs are ignored."""
        try:
            self.batch.patch_namespaced_job(job, namespace, {"spec": {"suspend": suspend}}, _preload_content=False)
        except ApiException as e:
            if e.status != 404:
                raise

    def stop_pod(self, namespace: str, name: str, uid: str, failed_peer: str) -> None:
        """Stop one trainer pod for a group restart: mark it (STOPPED_FOR, so its end starts no other restart), then
        delete it (SIGTERM, then its grace period). Gone or replaced already is fine."""
        try:
            self.core.patch_namespaced_pod(name, namespace,  # the uid is a precondition: 409 for another pod
                                           {"metadata": {"uid": uid, "annotations": {STOPPED_FOR: failed_peer}}},
                                           _preload_content=False)
            self.core.delete_namespaced_pod(name, namespace, body={"preconditions": {"uid": uid}},
                                            _preload_content=False)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def workload(self, namespace: str, job_uid: str) -> tuple[bool, Optional[dict]]:
        """(Kueue installed, the Workload Kueue made for the Job `job_uid` or None while it has made none)."""
        from .kueue import WORKLOAD_GROUP, WORKLOAD_PLURAL, WORKLOAD_VERSION, workload_selector

        try:
            items = _json(self.custom.list_namespaced_custom_object(
                WORKLOAD_GROUP, WORKLOAD_VERSION, namespace, WORKLOAD_PLURAL, label_selector=workload_selector(job_uid),
                _preload_content=False))["items"]
        except ApiException as e:
            if e.status == 404:  # Kueue is not installed
                return False, None
            raise
        return True, (items[0] if items else None)

    def set_workload_active(self, namespace: str, name: str, active: bool) -> None:
        """Activate (queue again) or deactivate (Kueue evicts it and stops the Job) the Workload `name`."""
        from .kueue import WORKLOAD_GROUP, WORKLOAD_PLURAL, WORKLOAD_VERSION, active_patch

        self.custom.patch_namespaced_custom_object(WORKLOAD_GROUP, WORKLOAD_VERSION, namespace, WORKLOAD_PLURAL,
                                                   name, active_patch(not active), _preload_content=False)

    def set_owner(self, kind: str, namespace: str, name: str, owner: dict) -> None:
        """Make the FineTuneJob `owner` the controller of an existing child (an output claim kept from an earlier
        job of the same name, now to be deleted with this one)."""
        if kind != "PersistentVolumeClaim":
            raise ValueError(f"the operator adopts only output claims, not a {kind}")
        self.core.patch_namespaced_persistent_volume_claim(name, namespace, {"metadata": {"ownerReferences": [owner]}},
                                                           _preload_content=False)

    def patch_status(self, namespace: str, name: str, patch: dict) -> Optional[dict]:
        """Merge-patch the status subresource (None values delete keys); the FineTuneJob as written, or None when
        it is gone."""
        try:
            return _json(self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": patch}, _preload_content=False))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def post_event(self, ftj: dict, event: Event, name: str, now: str) -> bool:
        """A core/v1 Event on the FineTuneJob (what `kubectl describe ftj` shows), named `name`: posting the same
        transition twice (an operator restart between the Event and the status write) finds it and posts nothing.

        Returns:
            False when an Event of that name exists already.
        """
        meta = ftj["metadata"]
        body = {
            "metadata": {"name": name, "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": ftj.get("apiVersion", f"{GROUP}/{VERSION}"),
                               "kind": ftj.get("kind", "FineTuneJob"), "name": meta["name"],
                               "namespace": meta["namespace"], "uid": meta["uid"]},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": REPORTING_COMPONENT},
            "reportingComponent": REPORTING_COMPONENT, "reportingInstance": REPORTING_COMPONENT,
            "action": "Reconcile", "firstTimestamp": now, "lastTimestamp": now, "eventTime": None, "count": 1,
        }
        try:
            self.core.create_namespaced_event(meta["namespace"], body, _preload_content=False)
            return True
        except ApiException as e:
            if e.status != 409:
                raise
            return False
