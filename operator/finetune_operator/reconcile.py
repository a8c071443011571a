"""Reconciling one FineTuneJob: create its children if absent, then mirror what they do into its status.

Why separate from the kopf handlers: the handlers are thin entry points (create, resume, suspend, child
events, periodic resync), and all of them end here, in two idempotent, level-triggered steps. Running either
twice, or after an operator restart, changes nothing that exists. A per-job lock serialises the status writes
of concurrent events, so each transition is posted as an Event exactly once by this process.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Optional

from kubernetes.client import ApiException
from pydantic import ValidationError

from finetune_api.contract import METRICS_PORT
from finetune_api.job import FineTuneJob
from finetune_api.loading import SpecError, validate_job
from finetune_api.status import FineTuneJobStatus

from . import kueue, names
from .cluster import ChildConflict, Cluster
from .metrics import OperatorMetrics
from .progress import fetch_progress, metrics_url
from .render import render_children
from .status import TERMINAL, Observation, derive_status, transitions

log = logging.getLogger(__name__)


def utcnow() -> str:
    """The current time as Kubernetes writes it (RFC 3339, seconds, Z)."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_body(body: dict) -> FineTuneJob:
    """The validated FineTuneJob of a watched object (only apiVersion, kind, name, namespace, labels, spec).

    Raises:
        SpecError: the object passed the CRD schema but not the full model (the message names the field).
    """
    meta = body["metadata"]
    data = {"apiVersion": body["apiVersion"], "kind": body["kind"], "spec": body.get("spec") or {},
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                         "labels": dict(meta.get("labels") or {}), "annotations": dict(meta.get("annotations") or {})}}
    return validate_job(data, source=f"FineTuneJob {meta.get('namespace')}/{meta['name']}")


class Reconciler:
    """The operator's state: API access, metrics, per-job locks, and errors the status must show."""

    def __init__(self, cluster: Cluster, image: str, fetch_timeout: float = 1.0):
        self.cluster = cluster
        self.image = image
        self.fetch_timeout = fetch_timeout
        self.phases: dict[tuple[str, str], str] = {}
        self.metrics = OperatorMetrics(lambda: list(self.phases.values()))
        self._errors: dict[tuple[str, str], tuple[str, str, bool]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def ensure_children(self, body: dict) -> int:
        """Create every child that is absent; returns how many were created.

        Raises:
            SpecError: the spec cannot run (permanent: recorded as phase Failed).
            ChildConflict: a child's name is taken (permanent until the user frees it).
            ApiException: the API refused or failed (transient: recorded as Reconciled=False, retried).
        """
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        started = time.perf_counter()
        try:
            job = parse_body(body)
            created = sum(self.cluster.create_if_absent(m)
                          for m in render_children(job, uid=meta["uid"], image=self.image))
        except (SpecError, ValidationError) as e:
            self._fail(key, "create", "InvalidSpec", str(e), permanent=True)
            raise
        except ChildConflict as e:
            self._fail(key, "create", "ChildConflict", str(e), permanent=False)
            raise
        except ApiException as e:
            self._fail(key, "create", "ReconcileError",
                       f"creating the children failed: {e.status} {e.reason}: {(e.body or '')[:500]}", permanent=False)
            raise
        finally:
            self.metrics.reconcile_seconds.labels("create").observe(time.perf_counter() - started)
        self._errors.pop(key, None)
        self.sync_status(*key)
        return created

    def _fail(self, key: tuple[str, str], action: str, reason: str, message: str, permanent: bool) -> None:
        self.metrics.reconcile_errors.labels(action, reason).inc()
        self._errors[key] = (reason, message, permanent)
        try:
            self.sync_status(*key)
        except ApiException:  # the status write failed too: the handler's retry will try again
            log.exception("could not record %s on FineTuneJob %s/%s", reason, *key)

    def set_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        """Mirror `spec.suspend` onto the Job (the Job controller stops or recreates the pods), or, for a job
        queued in Kueue, onto its Workload's `spec.active` (Kueue owns the Job's suspend: kueue.py)."""
        ftj = self.cluster.get_ftj(namespace, name)
        job = self.cluster.read("Job", namespace, names.job_name(name))
        queued = ftj is not None and job is not None and kueue.queue_name(ftj["metadata"].get("labels"))
        if not (queued and self.cluster.set_workload_active(namespace, job["metadata"]["uid"], not suspend)):
            self.cluster.set_job_suspend(namespace, names.job_name(name), suspend)
        self.sync_status(namespace, name)

    def sync_status(self, namespace: str, name: str, fetch: bool = False) -> Optional[FineTuneJobStatus]:
        """Observe the children, write the derived status if it changed, post an Event per transition.

        Args:
            fetch: also read progress from the rank-0 metrics endpoint (the periodic resync does).

        Returns:
            The new status, or None when the FineTuneJob is gone.
        """
        key = (namespace, name)
        started = time.perf_counter()
        try:
            with self._lock(key):
                return self._sync(key, fetch)
        except ApiException as e:
            self.metrics.reconcile_errors.labels("status", f"Api{e.status}").inc()
            raise
        finally:
            self.metrics.reconcile_seconds.labels("status").observe(time.perf_counter() - started)

    def _sync(self, key: tuple[str, str], fetch: bool) -> Optional[FineTuneJobStatus]:
        namespace, name = key
        ftj = self.cluster.get_ftj(namespace, name)
        if ftj is None:
            self.phases.pop(key, None)
            self._errors.pop(key, None)
            return None
        uid = ftj["metadata"]["uid"]
        job = self.cluster.read("Job", namespace, names.job_name(name))
        if job is not None and uid not in {r.get("uid") for r in job["metadata"].get("ownerReferences") or []}:
            job = None  # someone else's Job of that name: ChildConflict is reported by ensure_children
        pods = []
        if job is not None:
            job_uid = job["metadata"]["uid"]
            pods = [p for p in self.cluster.list_pods(namespace, name)
                    if job_uid in {r.get("uid") for r in p["metadata"].get("ownerReferences") or []}]
        try:
            previous = FineTuneJobStatus.model_validate(ftj.get("status") or {})
        except ValidationError:
            previous = FineTuneJobStatus()
        progress = None
        if fetch and previous.phase not in TERMINAL:
            pod0 = next((p for p in pods if p["metadata"].get("annotations", {}).get(
                "batch.kubernetes.io/job-completion-index") == "0" and metrics_url(p, METRICS_PORT)), None)
            if pod0 is not None:
                progress = fetch_progress(metrics_url(pod0, METRICS_PORT), self.fetch_timeout)
        err = self._errors.get(key)
        spec = ftj.get("spec") or {}
        obs = Observation(
            generation=ftj["metadata"].get("generation", 1), suspend=bool(spec.get("suspend")),
            nodes=int((spec.get("distributed") or {}).get("nodes", 1)), job=job, pods=pods, progress=progress,
            error=(err[0], err[1]) if err else None, error_is_permanent=bool(err and err[2]),
        )
        now = utcnow()
        new = derive_status(obs, previous, now)
        self.phases[key] = new.phase or "Pending"
        old_wire, new_wire = previous.to_wire(), new.to_wire()
        if new_wire == old_wire:
            return new
        patch = {k: None for k in old_wire if k not in new_wire} | new_wire
        self.cluster.patch_status(namespace, name, patch)
        if new.phase != previous.phase and new.phase is not None:
            self.metrics.transitions.labels(previous.phase or "None", new.phase).inc()
        for event in transitions(previous, new):
            self.metrics.events.labels(event.reason).inc()
            try:
                self.cluster.post_event(ftj, event, now)
            except ApiException:
                log.warning("could not post event %s on %s/%s", event.reason, namespace, name)
        return new

    def resync_all(self) -> int:
        """Sync every unfinished FineTuneJob (with progress); returns how many were synced.

        The safety net of level-triggered reconciling: a missed watch event, or an error, is corrected here.
        """
        count = 0
        for ftj in self.cluster.list_ftjs():
            meta = ftj["metadata"]
            phase = (ftj.get("status") or {}).get("phase")
            key = (meta["namespace"], meta["name"])
            if phase in TERMINAL and key not in self._errors:
                self.phases[key] = phase
                continue
            try:
                self.sync_status(*key, fetch=True)
                count += 1
            except ApiException:
                log.exception("resync of %s/%s failed", *key)
        return count
