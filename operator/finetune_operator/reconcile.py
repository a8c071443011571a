"""Reconciling one FineTuneJob: converge its children to the spec, then tell the truth about them in its status.

Why one level-triggered function: whatever woke the operator (the FineTuneJob changed, a child or pod changed, the
Job controller could not create pods, the periodic timer), `Reconciler.reconcile` looks at the whole world of the
job as the watches last saw it (a `World`, built by handlers.py from kopf's indexes: no GET or LIST here) and
makes it right: a missing child (deleted by someone) is created again, `spec.suspend` is mirrored onto the Job, the
peers of a failed pod of a multi-node job are stopped so the group restarts together, and the status is derived
afresh. Running it twice, or after an operator restart, changes nothing that is already right.

Events are posted before the status that records them, under a name derived from the transition (the job, the
status it left, the reason): after a crash between the two, the next reconcile derives the same transition, finds
its Event and posts nothing, then writes the status. Nothing about "already posted" lives in process memory.
A finished job (Succeeded or Failed) is final: its children are never recreated (a new Job would train again).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from kubernetes.client import ApiException
from pydantic import ValidationError

from finetune_api.job import FineTuneJob
from finetune_api.loading import SpecError, validate_job
from finetune_api.serving import ServingGate
from finetune_api.status import FineTuneJobStatus, Progress

from . import kueue, names
from .cluster import ChildConflict, Cluster
from .diagnosis import Refs, claims_in_question, refs_of
from .failure_policy import pods_to_stop
from .metrics import OperatorMetrics
from .pod_config import build_trainer_config, volume_shortfall
from .render import render_children
from .status import TERMINAL, Event, Observation, derive_status, transitions

log = logging.getLogger(__name__)
Key = tuple[str, str]


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


@dataclass(frozen=True)
class Child:
    """A child the watches saw: its owners' uids and labels (enough to tell ours from a stranger's)."""

    owners: frozenset = frozenset()
    labels: dict = field(default_factory=dict)


@dataclass
class World:
    """One FineTuneJob and everything of it the watches saw."""

    ftj: dict
    job: Optional[dict] = None
    pods: list[dict] = field(default_factory=list)
    children: dict[tuple[str, str], Child] = field(default_factory=dict)  # (kind, name) -> Child
    failed_create: Optional[str] = None
    progress: Optional[Progress] = None


def merge_patch(old: dict, new: dict) -> dict:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`: removed keys become None, at every depth."""
    patch: dict = {k: None for k in old if k not in new}
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(old.get(k), dict):
            sub = merge_patch(old[k], v)
            if sub:
                patch[k] = sub
        elif old.get(k) != v:
            patch[k] = v
    return patch


def event_name(ftj: dict, previous: FineTuneJobStatus, event: Event, restarts: Optional[int]) -> str:
    """The Event's name: the same for the same transition out of the same status, whoever derives it, whenever."""
    since = max((c.last_transition_time or "" for c in previous.conditions), default="")
    ident = "|".join([ftj["metadata"]["uid"], previous.phase or "", since, event.type, event.reason, str(restarts)])
    return f"{ftj['metadata']['name']}.{hashlib.sha256(ident.encode()).hexdigest()[:16]}"


def serving_gate(spec: dict) -> Optional[ServingGate]:
    """spec.serving.gate of a watched object (validated by the CRD and parse_body; None when absent)."""
    raw = (spec.get("serving") or {}).get("gate")
    try:
        return ServingGate.model_validate(raw) if raw else None
    except ValidationError:
        return None


def claim_capacity(claim: Optional[dict]) -> Optional[str]:
    """A claim's size: what it got (status.capacity), else what it asked for; None when unknown."""
    if not claim:
        return None
    got = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
    return got or (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


def _rv(obj: dict) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _owned(obj: Optional[dict], uid: str) -> bool:
    return obj is not None and uid in {r.get("uid") for r in (obj.get("metadata") or {}).get("ownerReferences") or []}


class Reconciler:
    """API writes, metrics, and the last status this process wrote per job (until the watch delivers it)."""

    def __init__(self, cluster: Cluster, image: str, clock: Callable[[], str] = utcnow):
        self.cluster, self.image, self.clock = cluster, image, clock
        self.phases: dict[Key, str] = {}
        self.metrics = OperatorMetrics(lambda: list(self.phases.values()))
        self._written: dict[Key, dict] = {}

    def forget(self, key: Key) -> None:
        """The FineTuneJob is gone: drop what this process kept about it."""
        self.phases.pop(key, None)
        self._written.pop(key, None)

    def reconcile(self, world: World) -> Optional[FineTuneJobStatus]:
        """Converge the children, then write the derived status and its Events if they changed.

        Returns:
            The status now in effect (None when the FineTuneJob is gone).

        Raises:
            ApiException: the status could not be written (the caller retries on the next event or tick).
        """
        started = time.perf_counter()
        try:
            return self._reconcile(world)
        finally:
            self.metrics.reconcile_seconds.labels("reconcile").observe(time.perf_counter() - started)

    def _reconcile(self, world: World) -> Optional[FineTuneJobStatus]:
        ftj = self._freshest(world.ftj)
        meta, spec = ftj["metadata"], ftj.get("spec") or {}
        key, uid = (meta["namespace"], meta["name"]), meta["uid"]
        previous = self._status_of(ftj)
        if meta.get("deletionTimestamp"):
            return previous  # being deleted (foreground): its children go, none may come back
        job = world.job if _owned(world.job, uid) else None
        error, permanent = None, False
        queue = kueue.queue_name(meta.get("labels"))
        kq: tuple[bool, Optional[dict]] = (False, None)  # (Kueue installed, the Job's Workload)
        warnings: list[tuple[str, str]] = []
        if previous.phase not in TERMINAL:
            try:
                if queue and job is not None:
                    kq = self.cluster.workload(meta["namespace"], job["metadata"]["uid"])
                created_job = self._converge(ftj, world, job, kq, warnings)
                job = job or created_job  # created now: the status says so at once, not "creating" first
            except (SpecError, ValidationError) as e:
                error, permanent = ("InvalidSpec", str(e)), True
            except ChildConflict as e:
                error = ("ChildConflict", str(e))
            except ApiException as e:
                error = ("ReconcileError", f"creating the children failed: {e.status} {e.reason}: {(e.body or '')[:500]}")
            if error:
                self.metrics.reconcile_errors.labels("reconcile", error[0]).inc()
        elif job is None:
            self.phases[key] = previous.phase
            return previous  # finished, and nothing left to read a late result from
        nodes = int((spec.get("distributed") or {}).get("nodes", 1))
        obs_pods = world.pods if job is not None else []
        obs = Observation(
            generation=meta.get("generation", 1), suspend=bool(spec.get("suspend")), nodes=nodes, job=job,
            pods=obs_pods, progress=world.progress, error=error,
            error_is_permanent=permanent, failed_create=world.failed_create,
            refs=self._refs(spec, meta["namespace"], names.output_pvc_name(meta["name"]), obs_pods),
            queue_state=kueue.queue_state(kq[1], queue) if queue and kq[0] else None,
            evictions=kueue.evictions(kq[1]), serving_gate=serving_gate(spec), warnings=tuple(warnings))
        now = self.clock()
        new = derive_status(obs, previous, now)
        self.phases[key] = new.phase or "Pending"
        self._write(ftj, previous, new, now)
        return new

    def _freshest(self, ftj: dict) -> dict:
        """The watched FineTuneJob, or with the status this process wrote if the watch has not delivered it yet
        (a reconcile from a stale status would announce a transition twice)."""
        key = (ftj["metadata"]["namespace"], ftj["metadata"]["name"])
        written = self._written.get(key)
        if written is None:
            return ftj
        if _rv(written) <= _rv(ftj) or written["metadata"].get("uid") != ftj["metadata"]["uid"]:
            self._written.pop(key, None)
            return ftj
        return ftj | {"status": written.get("status") or {}}

    @staticmethod
    def _status_of(ftj: dict) -> FineTuneJobStatus:
        raw = ftj.get("status") or {}
        if raw.get("observedGeneration") is None and not raw.get("conditions"):
            return FineTuneJobStatus()  # never reconciled: what it shows is the CRD's default ("no operator yet")
        try:
            return FineTuneJobStatus.model_validate(raw)
        except ValidationError:
            return FineTuneJobStatus()

    def _converge(self, ftj: dict, world: World, job: Optional[dict], kq: tuple[bool, Optional[dict]],
                  warnings: list[tuple[str, str]]) -> Optional[dict]:
        """Create missing children, adopt a kept output claim, mirror suspend, stop a failed group's peers.

        Args:
            kq: (Kueue installed, the Job's Workload) for a queued job.
            warnings: (reason, message) of what creating the children found wrong but not fatal (appended).

        Returns:
            The Job manifest when this call created the Job, else None.
        """
        meta, spec = ftj["metadata"], ftj.get("spec") or {}
        name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
        out = ((spec.get("output") or {}).get("volume") or {}).get("create")
        expected = [("ServiceAccount", names.service_account_name(name)), ("ConfigMap", names.configmap_name(name)),
                    ("Service", names.service_name(name))]
        expected += [("PersistentVolumeClaim", names.output_pvc_name(name))] if out else []
        expected += [("Job", names.job_name(name))]
        missing = []
        for kind, child in expected:
            seen = world.children.get((kind, child))
            if seen is None:
                missing.append((kind, child))
            elif uid not in seen.owners and not self._kept_claim(kind, seen, name):
                raise ChildConflict(f"{kind} {namespace}/{child} already exists and is not owned by this FineTuneJob; "
                                    f"delete or rename it")
        created_job = None
        if missing:
            parsed = parse_body(ftj)
            manifests = {(m["kind"], m["metadata"]["name"]): m
                         for m in render_children(parsed, uid=uid, image=self.image)}
            if ("Job", names.job_name(name)) in missing:
                warnings.extend(self._volume_warnings(parsed))
            for kind, child in missing:
                if self.cluster.create(manifests[(kind, child)]):
                    created_job = manifests[(kind, child)] if kind == "Job" else created_job
                else:
                    existing = self.cluster.read(kind, namespace, child)  # the watch has not shown it yet
                    if existing is not None and not _owned(existing, uid) and not self._kept_claim(
                            kind, Child(labels=(existing.get("metadata") or {}).get("labels") or {}), name):
                        raise ChildConflict(f"{kind} {namespace}/{child} already exists and is not owned by this "
                                            f"FineTuneJob; delete or rename it")
        claim = world.children.get(("PersistentVolumeClaim", names.output_pvc_name(name)))
        if out and out.get("whenDeleted") == "Delete" and claim is not None and uid not in claim.owners:
            self.cluster.set_owner("PersistentVolumeClaim", namespace, names.output_pvc_name(name),
                                   names.owner_reference(name, uid))
        if job is None or any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
                              for c in (job.get("status") or {}).get("conditions") or []):
            return created_job
        want, have = bool(spec.get("suspend")), bool((job.get("spec") or {}).get("suspend"))
        installed, workload = kq
        if kueue.queue_name(meta.get("labels")) and installed:
            # Kueue owns a queued Job's suspend (it would undo ours): the user's wish goes to its Workload
            # (deactivated: Kueue evicts it and stops the Job). Until Kueue has made the Workload, its webhook keeps
            # the Job suspended; the next pass finds it.
            if workload is not None and kueue.is_active(workload) == want:
                self.cluster.set_workload_active(namespace, workload["metadata"]["name"], not want)
        elif want != have:
            self.cluster.set_job_suspend(namespace, job["metadata"]["name"], want)
        nodes = int((spec.get("distributed") or {}).get("nodes", 1))
        for pod, failed_peer in pods_to_stop(world.pods, nodes):
            log.info("stopping pod %s/%s: its peer %s failed, the group restarts together", namespace,
                     pod["metadata"]["name"], failed_peer)
            self.cluster.stop_pod(namespace, pod["metadata"]["name"], pod["metadata"]["uid"], failed_peer)
        return created_job

    def _refs(self, spec: dict, namespace: str, output_claim: str, pods: list[dict]) -> Refs:
        """What the pods depend on; while a pod waits on its claims, which of them are missing or unbound (read
        here, once per pass in that state only: the scheduler's message names one cause, not the missing claim)."""
        refs = refs_of(spec, namespace, output_claim)
        if not refs.claims or not claims_in_question(pods):
            return refs
        missing, unbound = [], []
        for claim in sorted(refs.claims):
            try:
                got = self.cluster.read("PersistentVolumeClaim", namespace, claim)
            except ApiException:
                return refs
            if got is None:
                missing.append(claim)
            elif ((got.get("status") or {}).get("phase")) != "Bound":
                unbound.append(claim)
        return replace(refs, missing_claims=tuple(missing), unbound_claims=tuple(unbound))

    def _volume_warnings(self, job: FineTuneJob) -> list[tuple[str, str]]:
        """A warning when the output volume is smaller than the launch plan's disk peak (read once, at creation)."""
        vol = job.spec.output.volume
        if vol is None:
            return []
        capacity = vol.create.size if vol.create is not None else None
        if vol.claim_name:
            claim = self.cluster.read("PersistentVolumeClaim", job.metadata.namespace or "default", vol.claim_name)
            capacity = claim_capacity(claim)
        if not capacity:
            return []
        short = volume_shortfall(capacity, build_trainer_config(job))
        return [("OutputVolumeTooSmall", f"PersistentVolumeClaim {vol.claim_name or names.output_pvc_name(job.metadata.name)}: "
                                         + short)] if short else []

    @staticmethod
    def _kept_claim(kind: str, child: Child, name: str) -> bool:
        """An output claim of an earlier FineTuneJob of this name, kept by `whenDeleted: Retain`: reused."""
        return (kind == "PersistentVolumeClaim" and not child.owners
                and child.labels.get(names.JOB_NAME_LABEL) == name
                and child.labels.get("app.kubernetes.io/managed-by") == names.MANAGED_BY)

    def _write(self, ftj: dict, previous: FineTuneJobStatus, new: FineTuneJobStatus, now: str) -> None:
        old_wire, new_wire = (ftj.get("status") or {}), new.to_wire()
        if new_wire == old_wire:
            return
        meta = ftj["metadata"]
        for event in transitions(previous, new):
            try:
                if self.cluster.post_event(ftj, event, event_name(ftj, previous, event, new.restarts), now):
                    self.metrics.events.labels(event.reason).inc()
            except ApiException:
                log.warning("could not post event %s on %s/%s", event.reason, meta["namespace"], meta["name"])
        written = self.cluster.patch_status(meta["namespace"], meta["name"], merge_patch(old_wire, new_wire))
        if written is not None:
            self._written[(meta["namespace"], meta["name"])] = {"metadata": written.get("metadata") or {},
                                                                "status": written.get("status") or {}}
        if new.phase != previous.phase and new.phase is not None:
            self.metrics.transitions.labels(previous.phase or "None", new.phase).inc()
