"""Kueue and the FineTuneJob: who suspends the trainer Job when the job is queued, and what its Workload says.

Why: Kueue's batch/v1 Job integration (the one Kueue supports for a Job another controller creates) owns the
`suspend` of a Job labelled `kueue.x-k8s.io/queue-name`: it keeps it suspended until the ClusterQueue admits the
Job's Workload, unsuspends it on admission, and suspends it again when it preempts it. A Job that someone else
suspends while admitted is unsuspended by Kueue (its reconciler: "Job admitted, unsuspending"), so for a queued
FineTuneJob, `spec.suspend` must act on the Workload instead: `spec.active: false` makes Kueue evict it and stop
the Job (the trainer checkpoints on SIGTERM), `true` queues it again. The Job is created as the spec says:
Kueue's mutating webhook suspends a queued Job at creation (so no pod starts before admission), and where Kueue
is not installed the label does nothing and the job starts at once.

Everything here is pure; cluster.py does the calls.
"""

from __future__ import annotations

from typing import Optional

from .names import QUEUE_LABEL

WORKLOAD_GROUP, WORKLOAD_VERSION, WORKLOAD_PLURAL = "kueue.x-k8s.io", "v1beta2", "workloads"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue's label on the Workload of a Job


def queue_name(labels: Optional[dict]) -> Optional[str]:
    """The Kueue LocalQueue a FineTuneJob (or its Job) is queued in, or None."""
    return (labels or {}).get(QUEUE_LABEL) or None


def workload_selector(job_uid: str) -> str:
    """The label selector of the Workload Kueue made for the Job with uid `job_uid`."""
    return f"{JOB_UID_LABEL}={job_uid}"


def active_patch(suspend: bool) -> dict:
    """The Workload patch for `spec.suspend`: deactivate (Kueue evicts and stops the Job) or activate (requeue)."""
    return {"spec": {"active": not suspend}}


def _true(workload: dict, ctype: str) -> Optional[dict]:
    for c in (workload.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def queue_state(workload: Optional[dict], queue: str) -> tuple[str, str]:
    """(reason, message) for a queued job's Suspended condition, from its Workload's conditions.

    For the operator's status mapping (status.py): a suspended Job whose FineTuneJob has a queue label reads
    `Queued` (waiting for quota), `Preempted` (evicted by a higher-priority workload; resumes from its newest
    checkpoint when readmitted) or `Deactivated` (spec.suspend).
    """
    if workload is None:
        return "Queued", f"queued: waiting for Kueue to admit the Job through LocalQueue {queue!r}"
    evicted = _true(workload, "Evicted")
    if evicted is not None and evicted.get("reason") == "Preempted":
        return "Preempted", (f"preempted by Kueue ({evicted.get('message', '').strip()}); the trainer saved a "
                             "checkpoint and resumes from it when the ClusterQueue admits the job again")
    if evicted is not None and evicted.get("reason") == "Deactivated":
        return "Deactivated", "spec.suspend is true: Kueue's Workload is deactivated; set it to false to queue again"
    pending = next((c for c in (workload.get("status") or {}).get("conditions") or []
                    if c.get("type") == "QuotaReserved" and c.get("status") == "False"), None)
    why = f": {pending['message']}" if pending and pending.get("message") else ""
    return "Queued", f"queued in LocalQueue {queue!r}, waiting for quota{why}"


# Evictions that stop the trainer and start it again later (not the user's own deactivation)
_USER_STOPS = ("Deactivated", "InactiveWorkload")


def evictions(workload: Optional[dict]) -> int:
    """How often Kueue stopped this job's trainer to run it again later (preempted, pods not ready in time, its
    ClusterQueue stopped...): the Workload's `status.schedulingStats.evictions`, minus the user's own suspensions.
    A level, not an edge: it survives operator restarts, and the status's `restarts` adds it to the pod failures."""
    stats = ((workload or {}).get("status") or {}).get("schedulingStats") or {}
    return sum(int(e.get("count") or 0) for e in stats.get("evictions") or [] if e.get("reason") not in _USER_STOPS)


def is_active(workload: dict) -> bool:
    """Whether the Workload is active (Kueue's default when `spec.active` is unset)."""
    return (workload.get("spec") or {}).get("active", True) is not False
