"""What the children say, as the FineTuneJob's status: phase, conditions, progress, result, and the events.

Why pure: this is where "status mirrors the truth" is decided, so it must be testable table by table without a
cluster. The handlers read the Job, its pods and the trainer's metrics, call `derive_status`, patch the result
and post `transitions(...)` as Events. Every outcome - including the operator's own failure to reconcile -
lands in status, so it is never left stale. No I/O here; the clock comes in as `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune_api.contract import TerminationMessage
from finetune_api.status import Condition, FineTuneJobStatus, Progress, Result

from . import names

TERMINAL = ("Succeeded", "Failed")
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
_WARNING_REASONS = {"Unschedulable", "ReconcileError", "InvalidSpec", "ChildConflict", "PodFailed"}


@dataclass(frozen=True)
class Observation:
    """Everything the operator saw of one FineTuneJob's world, at one moment."""

    generation: int
    suspend: bool
    nodes: int
    job: Optional[dict] = None
    pods: list[dict] = field(default_factory=list)
    progress: Optional[Progress] = None
    error: Optional[tuple[str, str]] = None  # (reason, message) of the operator's own failure
    error_is_permanent: bool = False


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the FineTuneJob."""

    type: str
    reason: str
    message: str


def _job_condition(job: dict, ctype: str) -> Optional[dict]:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def _terminated(pod: dict) -> Optional[dict]:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == names.TRAINER_CONTAINER:
            return (cs.get("state") or {}).get("terminated")
    return None


def termination_doc(pod: dict) -> Optional[TerminationMessage]:
    """The trainer's termination message of `pod`, or None when absent or not ours (a log tail after a crash)."""
    return TerminationMessage.from_text((_terminated(pod) or {}).get("message") or "")


def _index(pod: dict) -> str:
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX, "")


def result_of(pods: list[dict]) -> Optional[Result]:
    """The run's result from rank 0's termination message (pod index 0, succeeded)."""
    for pod in sorted(pods, key=_index):
        doc = termination_doc(pod)
        if doc and doc.outcome == "Succeeded" and doc.output_path:
            return Result(output_path=doc.output_path, manifest_sha256=doc.manifest_sha256, steps=doc.steps,
                          final_loss=doc.final_loss, final_eval_loss=doc.final_eval_loss)
    return None


def failure_of(job: dict, pods: list[dict]) -> tuple[str, str]:
    """(reason, message) of a failed run: the trainer's own words first, then the container's, then the Job's."""
    cond = _job_condition(job, "Failed") or {}
    job_part = f"Job {job['metadata']['name']}: {cond.get('reason', 'Failed')}: {cond.get('message', '')}".rstrip(": ")
    failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed" and _terminated(p)]
    failed.sort(key=lambda p: _terminated(p).get("finishedAt") or "", reverse=True)
    for pod in failed:
        doc = termination_doc(pod)
        if doc and doc.reason:
            return doc.reason, f"{doc.message or ''} ({job_part})"
    if failed:
        pod, term = failed[0], _terminated(failed[0])
        text = (term.get("message") or "").strip()[-1000:]
        return "PodFailed", (f"pod {pod['metadata']['name']}: container {names.TRAINER_CONTAINER} exited with code "
                             f"{term.get('exitCode')} ({term.get('reason', 'Error')})"
                             + (f": {text}" if text else "") + f"; {job_part}")
    return cond.get("reason") or "JobFailed", job_part


def _requests(pod: dict) -> str:
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == names.TRAINER_CONTAINER:
            req = (c.get("resources") or {}).get("requests") or {}
            return ", ".join(f"{v} {k}" for k, v in sorted(req.items(), key=lambda kv: "/" not in kv[0]))
    return "its requests"


def unschedulable(pods: list[dict]) -> Optional[str]:
    """A message naming what a waiting pod needs and why the scheduler cannot place it, or None."""
    for pod in sorted(pods, key=_index):
        if (pod.get("status") or {}).get("phase") != "Pending" or (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for c in (pod.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable":
                return (f"pod {pod['metadata']['name']} waits for a node with {_requests(pod)} free: "
                        f"{c.get('message', '').strip()} Free that capacity, add nodes, or lower "
                        f"spec.distributed.gpusPerNode / spec.resources.")
    return None


def _progress(obs: Observation, result: Optional[Result]) -> Optional[Progress]:
    if result is not None and result.steps is not None:
        return Progress(step=result.steps, total_steps=result.steps, percent="100%", loss=result.final_loss,
                        eval_loss=result.final_eval_loss, eta_seconds=0)
    return obs.progress


def _phase(obs: Observation) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """(phase, {condition type: (status, reason, message)}) for the observation."""
    job, pods = obs.job, [p for p in obs.pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    if obs.error and (obs.error_is_permanent or job is None):
        reason, msg = obs.error
        if obs.error_is_permanent:
            return "Failed", {"Failed": ("True", reason, msg), "Running": ("False", reason, msg)}
        return "Pending", {"Created": ("False", reason, msg)}
    if job is None:
        return "Pending", {"Created": ("False", "Creating", "creating the trainer Job and its ConfigMap, Service")}
    conds: dict[str, tuple[str, str, str]] = {"Created": ("True", "ChildrenCreated", f"Job {job['metadata']['name']} created")}
    if _job_condition(job, "Failed"):
        reason, msg = failure_of(job, obs.pods)
        return "Failed", conds | {"Failed": ("True", reason, msg), "Running": ("False", reason, msg)}
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet"):
        res = result_of(obs.pods)
        msg = "training finished" + (f": {res.steps} steps, final loss {res.final_loss:.4g}, output {res.output_path}"
                                     if res and res.steps is not None and res.final_loss is not None else "")
        return "Succeeded", conds | {"Succeeded": ("True", "Completed", msg), "Running": ("False", "Completed", msg),
                                     "Scheduled": ("True", "Scheduled", "all trainer pods were scheduled")}
    if (job.get("spec") or {}).get("suspend"):
        if obs.suspend:
            live = sum(1 for p in pods if (p.get("status") or {}).get("phase") in ("Pending", "Running"))
            msg = ("spec.suspend is true: trainer pods stopped" + (f" ({live} still stopping)" if live else "")
                   + "; set it to false to resume from the last checkpoint")
            return "Suspended", conds | {"Suspended": ("True", "SuspendedByUser", msg), "Running": ("False", "Suspended", msg)}
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(names.QUEUE_LABEL)
        msg = (f"queued: the Job waits for admission by Kueue queue {queue!r}" if queue
               else "the Job is suspended by another controller; waiting for it to be resumed")
        return "Pending", conds | {"Suspended": ("True", "Queued", msg), "Running": ("False", "Queued", msg)}
    resumed = {"Suspended": ("False", "Resumed", "spec.suspend is false")}
    why = unschedulable(pods)
    if why:
        return "Pending", conds | resumed | {"Scheduled": ("False", "Unschedulable", why),
                                             "Running": ("False", "Unschedulable", why)}
    running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
    if running >= obs.nodes:
        msg = f"{running}/{obs.nodes} trainer pods running"
        p = obs.progress
        if p and p.total_steps:
            msg += f", step {p.step}/{p.total_steps}" + (f", loss {p.loss:.4g}" if p.loss is not None else "")
        return "Running", conds | resumed | {"Scheduled": ("True", "Scheduled", "all trainer pods were scheduled"),
                                             "Running": ("True", "PodsRunning", msg)}
    msg = f"{running}/{obs.nodes} trainer pods running"
    return "Pending", conds | resumed | {"Running": ("False", "Starting", msg)}


def _merge(previous: list[Condition], new: dict[str, tuple[str, str, str]], now: str, gen: int) -> list[Condition]:
    old = {c.type: c for c in previous}
    out: list[Condition] = []
    for ctype in dict.fromkeys([*old, *new]):
        if ctype not in new:
            out.append(old[ctype])
            continue
        status, reason, msg = new[ctype]
        prev = old.get(ctype)
        since = prev.last_transition_time if prev is not None and prev.status == status else now
        out.append(Condition(type=ctype, status=status, reason=reason, message=msg[:32768],
                             last_transition_time=since, observed_generation=gen))
    return out


def derive_status(obs: Observation, previous: Optional[FineTuneJobStatus], now: str) -> FineTuneJobStatus:
    """The FineTuneJob status for `obs`, keeping transition times and results from `previous`.

    A finished job stays finished (its phase is taken from the Job's terminal condition, which never changes);
    the operator's transient errors show as `Reconciled=False` without hiding the phase.
    """
    previous = previous or FineTuneJobStatus()
    phase, conds = _phase(obs)
    if obs.error and not obs.error_is_permanent and obs.job is not None:
        conds["Reconciled"] = ("False", *obs.error)
    elif "Reconciled" in {c.type for c in previous.conditions}:
        conds["Reconciled"] = ("True", "Reconciled", "the operator reconciled the children")
    if conds.get("Suspended", ("",))[0] == "False" and "Suspended" not in {c.type for c in previous.conditions}:
        del conds["Suspended"]  # "resumed" only means something after a suspension
    job_status = (obs.job or {}).get("status") or {}
    result = result_of(obs.pods) if phase == "Succeeded" else None
    completion = None
    if phase in TERMINAL:
        completion = job_status.get("completionTime") or previous.completion_time or now
    lead = {"Succeeded": "Succeeded", "Failed": "Failed", "Suspended": "Suspended"}.get(phase)
    msg = conds[lead][2] if lead else conds.get("Running", conds.get("Created", ("", "", "")))[2]
    return FineTuneJobStatus(
        phase=phase,
        conditions=_merge(previous.conditions, conds, now, obs.generation),
        observed_generation=obs.generation,
        start_time=job_status.get("startTime") or previous.start_time,
        completion_time=completion,
        progress=_progress(obs, result) or previous.progress,
        result=result or previous.result,
        message=msg[:32768] or None,
    )


def transitions(previous: Optional[FineTuneJobStatus], new: FineTuneJobStatus) -> list[Event]:
    """Events for what changed: every phase change, and every condition that turned to a new reason."""
    previous = previous or FineTuneJobStatus()
    events: list[Event] = []
    old = {c.type: (c.status, c.reason) for c in previous.conditions}
    for c in new.conditions:
        changed = old.get(c.type) != (c.status, c.reason)
        if changed and c.status == "False" and c.reason in _WARNING_REASONS and c.reason not in {e.reason for e in events}:
            events.append(Event("Warning", c.reason, c.message))
    if new.phase != previous.phase:
        failed = next((c for c in new.conditions if c.type == "Failed" and c.status == "True"), None)
        if failed is not None:
            events.append(Event("Warning", "Failed", f"{failed.reason}: {failed.message}"))
        else:
            events.append(Event("Normal", new.phase or "Unknown", new.message or new.phase or ""))
    if new.result is not None and previous.result is None and new.phase == previous.phase:
        events.append(Event("Normal", "ResultRecorded", f"output {new.result.output_path}, "
                                                       f"manifest sha256 {new.result.manifest_sha256}"))
    return events
