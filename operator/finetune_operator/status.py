"""What the children say, as the FineTuneJob's status: phase, conditions, progress, result, and the events.

Why pure: this is where "status tells the truth" is decided, so it must be testable table by table without a
cluster. The reconciler gathers an Observation (the Job, its pods, the Job controller's FailedCreate message, the
trainer's progress, the operator's own error), calls `derive_status`, posts `transitions(...)` as Events and patches
the result. Every outcome - a pod that cannot be created, pulled, started or placed, a retry, the operator's own
failure to reconcile - lands in status with its own reason, so it is never left stale. No I/O; the clock comes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune_api.contract import TerminationMessage
from finetune_api.serving import READY_TO_SERVE, ServingGate, ready_to_serve
from finetune_api.status import Condition, FineTuneJobStatus, Progress, Result

from . import names
from .diagnosis import Problem, Refs, diagnose
from .failure_policy import attempt, index_of, last_failure, phase_of, restarts, terminated

TERMINAL = ("Succeeded", "Failed")
_NORMAL_REASONS = {"ChildrenCreated", "Creating", "Starting", "Scheduled", "PodsRunning", "Completed", "Resumed",
                   "SuspendedByUser", "Suspended", "Queued", "Deactivated", "Reconciled", "Restarted"}


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
    failed_create: Optional[str] = None  # the Job controller's latest FailedCreate message for the Job
    refs: Refs = field(default_factory=lambda: Refs(""))
    queue_state: Optional[tuple[str, str]] = None  # (reason, message) from a queued job's Kueue Workload
    evictions: int = 0  # times Kueue stopped the trainer to run it again later (its Workload's scheduling stats)
    serving_gate: Optional[ServingGate] = None  # spec.serving.gate
    warnings: tuple[tuple[str, str], ...] = ()  # (reason, message): found wrong but not fatal (a small volume)


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


def termination_doc(pod: dict) -> Optional[TerminationMessage]:
    """The trainer's termination message of `pod`, or None when absent or not ours (a log tail after a crash)."""
    return TerminationMessage.from_text((terminated(pod) or {}).get("message") or "")


def result_of(pods: list[dict]) -> Optional[Result]:
    """The run's result from rank 0's termination message (pod index 0, succeeded)."""
    for pod in sorted(pods, key=index_of):
        doc = termination_doc(pod)
        if doc and doc.outcome == "Succeeded" and doc.output_path:
            return Result(output_path=doc.output_path, manifest_sha256=doc.manifest_sha256, steps=doc.steps,
                          final_loss=doc.final_loss, final_eval_loss=doc.final_eval_loss,
                          eval_exact_match=doc.eval_exact_match)
    return None


def failure_of(job: dict, pods: list[dict]) -> tuple[str, str]:
    """(reason, message) of a failed run: the trainer's own words first, then the container's, then the Job's."""
    cond = _job_condition(job, "Failed") or {}
    job_part = f"Job {job['metadata']['name']}: {cond.get('reason', 'Failed')}: {cond.get('message', '')}".rstrip(": ")
    failed = [p for p in pods if phase_of(p) == "Failed" and terminated(p)]
    failed.sort(key=lambda p: terminated(p).get("finishedAt") or "", reverse=True)
    for pod in failed:
        doc = termination_doc(pod)
        if doc and doc.reason:
            return doc.reason, f"{doc.message or ''} ({job_part})"
    if failed:
        pod, term = failed[0], terminated(failed[0])
        text = (term.get("message") or "").strip()[-1000:]
        return "PodFailed", (f"pod {pod['metadata']['name']}: container {names.TRAINER_CONTAINER} exited with code "
                             f"{term.get('exitCode')} ({term.get('reason', 'Error')})"
                             + (f": {text}" if text else "") + f"; {job_part}")
    return cond.get("reason") or "JobFailed", job_part


def _progress(obs: Observation, result: Optional[Result]) -> Optional[Progress]:
    if result is not None and result.steps is not None:
        return Progress(step=result.steps, total_steps=result.steps, percent="100%", loss=result.final_loss,
                        eval_loss=result.final_eval_loss, eta_seconds=0)
    return obs.progress


def _succeeded(obs: Observation) -> bool:
    """Every node's pod finished with exit 0 (the Job's Complete condition may come a moment later)."""
    done = {index_of(p) for p in obs.pods if phase_of(p) == "Succeeded"}
    return len(done) >= obs.nodes


def _restart_message(obs: Observation) -> tuple[str, str]:
    """(reason, message) of the Restarting condition: the last failure and where the retry budget stands."""
    failure = last_failure(obs.pods)
    n, m = attempt(obs.job or {}, obs.pods)
    budget = f"attempt {n} of {m}"
    if failure is None:
        return "Restarting", f"the trainer pods are being replaced; {budget}"
    group = " - restarting all trainer pods together" if obs.nodes > 1 else ""
    reason = "TrainerFailed" if failure.counted else ("NodeLost" if failure.exit_code is None else "Preempted")
    charge = "" if failure.counted else "; not counted against the retry budget"
    return reason, f"{failure.describe()}{group}; the replacement resumes from the newest checkpoint ({budget}{charge})"


def _phase(obs: Observation, previous: FineTuneJobStatus) -> tuple[str, dict[str, tuple[str, str, str]]]:
    """(phase, {condition type: (status, reason, message)}) for the observation."""
    job, pods = obs.job, obs.pods
    if obs.error and (obs.error_is_permanent or job is None):
        reason, msg = obs.error
        if obs.error_is_permanent:
            return "Failed", {"Failed": ("True", reason, msg), "Running": ("False", reason, msg)}
        return "Pending", {"Created": ("False", reason, msg)}
    if job is None:
        return "Pending", {"Created": ("False", "Creating", "creating the trainer Job and its ConfigMap, Service")}
    conds: dict[str, tuple[str, str, str]] = {"Created": ("True", "ChildrenCreated", f"Job {job['metadata']['name']} created")}
    if _job_condition(job, "Failed"):
        reason, msg = failure_of(job, pods)
        return "Failed", conds | {"Failed": ("True", reason, msg), "Running": ("False", reason, msg),
                                  "Restarting": ("False", reason, msg)}
    if _job_condition(job, "Complete") or _job_condition(job, "SuccessCriteriaMet") or _succeeded(obs):
        res = result_of(pods)
        msg = "training finished" + (f": {res.steps} steps, final loss {res.final_loss:.4g}, output {res.output_path}"
                                     if res and res.steps is not None and res.final_loss is not None else "")
        return "Succeeded", conds | {"Succeeded": ("True", "Completed", msg), "Running": ("False", "Completed", msg),
                                     "Scheduled": ("True", "Scheduled", "all trainer pods were scheduled"),
                                     "Restarting": ("False", "Completed", msg)}
    if (job.get("spec") or {}).get("suspend"):
        if obs.suspend:
            live = sum(1 for p in pods if phase_of(p) in ("Pending", "Running"))
            msg = ("spec.suspend is true: trainer pods stopped" + (f" ({live} still stopping)" if live else "")
                   + "; set it to false to resume from the last checkpoint")
            return "Suspended", conds | {"Suspended": ("True", "SuspendedByUser", msg), "Running": ("False", "Suspended", msg)}
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(names.QUEUE_LABEL)
        reason, msg = obs.queue_state or ("Queued", f"queued: the Job waits for admission by Kueue queue {queue!r}"
                                          if queue else "the Job is suspended by another controller; waiting for "
                                          "it to be resumed")
        return "Pending", conds | {"Suspended": ("True", reason, msg), "Running": ("False", reason, msg)}
    conds |= {"Suspended": ("False", "Resumed", "spec.suspend is false")}
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    running = len({index_of(p) for p in live if phase_of(p) == "Running"})
    done = len({index_of(p) for p in live if phase_of(p) == "Succeeded"})
    if running + done >= obs.nodes:
        msg = f"{running}/{obs.nodes} trainer pods running" + (f", {done} finished" if done else "")
        p = obs.progress
        if p and p.total_steps:
            msg += f", step {p.step}/{p.total_steps}" + (f", loss {p.loss:.4g}" if p.loss is not None else "")
        conds |= {"Scheduled": ("True", "Scheduled", "all trainer pods were scheduled"),
                  "Running": ("True", "PodsRunning", msg)}
        if "Restarting" in {c.type for c in previous.conditions}:
            conds["Restarting"] = ("False", "Restarted", f"running again after {restarts(pods) + obs.evictions} restart(s)")
        return "Running", conds
    problem: Optional[Problem] = diagnose(pods, obs.failed_create, obs.nodes, obs.refs)
    if problem is not None:
        conds[problem.condition] = ("False", problem.reason, problem.message)
        conds["Running"] = ("False", problem.reason, problem.message)
    else:
        conds["Running"] = ("False", "Starting", f"{running}/{obs.nodes} trainer pods running")
    if restarts(pods) > 0 or last_failure(pods) is not None:
        reason, msg = _restart_message(obs)
        conds["Restarting"] = ("True", reason, msg + (f"; now: {problem.message}" if problem else ""))
        return "Restarting", conds
    return "Pending", conds


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
    phase, conds = _phase(obs, previous)
    for reason, message in obs.warnings:
        conds["OutputVolume"] = ("False", reason, message)
    if obs.error and not obs.error_is_permanent and obs.job is not None:
        conds["Reconciled"] = ("False", *obs.error)
    elif "Reconciled" in {c.type for c in previous.conditions}:
        conds["Reconciled"] = ("True", "Reconciled", "the operator reconciled the children")
    had = {c.type for c in previous.conditions}
    for ctype in ("Suspended", "Restarting"):
        if conds.get(ctype, ("",))[0] == "False" and ctype not in had:
            del conds[ctype]  # "resumed" or "not restarting" only mean something after a suspension or a restart
    job_status = (obs.job or {}).get("status") or {}
    result = result_of(obs.pods) if phase == "Succeeded" else None
    if phase == "Succeeded":
        conds[READY_TO_SERVE] = tuple(ready_to_serve(obs.serving_gate, result or previous.result))
    completion = None
    if phase in TERMINAL:
        finished = max((terminated(p) or {}).get("finishedAt") or "" for p in obs.pods) if obs.pods else ""
        completion = job_status.get("completionTime") or previous.completion_time or finished or now
    lead = {"Succeeded": "Succeeded", "Failed": "Failed", "Suspended": "Suspended", "Restarting": "Restarting"}.get(phase)
    msg = conds[lead][2] if lead else conds.get("Running", conds.get("Created", ("", "", "")))[2]
    count = restarts(obs.pods) + obs.evictions
    return FineTuneJobStatus(
        phase=phase,
        conditions=_merge(previous.conditions, conds, now, obs.generation),
        observed_generation=obs.generation,
        start_time=job_status.get("startTime") or previous.start_time,
        completion_time=completion,
        restarts=max(count, previous.restarts or 0) or None,
        progress=_progress(obs, result) or previous.progress,
        result=result or previous.result,
        message=msg[:32768] or None,
    )


def transitions(previous: Optional[FineTuneJobStatus], new: FineTuneJobStatus) -> list[Event]:
    """Events for what changed, each told once: a Warning per condition that turned to a problem, a Warning per
    restart and failure, a Normal event when the job starts running, finishes or is suspended.

    A phase change into Pending or Restarting posts no event of its own: the Warning that explains it says it (a
    Normal "Pending" repeating the Warning's text was noise).
    """
    previous = previous or FineTuneJobStatus()
    events: list[Event] = []
    old = {c.type: (c.status, c.reason) for c in previous.conditions}
    restarted = (new.restarts or 0) > (previous.restarts or 0)
    failed = next((c for c in new.conditions if c.type == "Failed" and c.status == "True"), None)
    for c in new.conditions:
        if failed is not None and c.reason == failed.reason:
            continue  # told once, by the Failed event below
        changed = old.get(c.type) != (c.status, c.reason)
        if c.type == "Restarting":
            if c.status == "True" and (changed or restarted):
                events.append(Event("Warning", "Restarting", c.message))
            continue
        if c.type in ("Failed", "Succeeded"):
            continue
        if c.type == "Suspended" and c.status == "True" and c.reason == "Preempted" and changed:
            events.append(Event("Warning", "Preempted", c.message))
            continue
        if changed and c.status == "False" and c.reason not in _NORMAL_REASONS \
                and c.reason not in {e.reason for e in events}:
            events.append(Event("Warning", c.reason, c.message))
    if new.phase != previous.phase:
        if failed is not None:
            events.append(Event("Warning", "Failed", f"{failed.reason}: {failed.message}"))
        elif new.phase in ("Running", "Succeeded", "Suspended") or (new.phase == "Pending" and not events):
            events.append(Event("Normal", new.phase or "Unknown", new.message or new.phase or ""))
    if new.result is not None and previous.result is None and new.phase == previous.phase:
        events.append(Event("Normal", "ResultRecorded", f"output {new.result.output_path}, "
                                                       f"manifest sha256 {new.result.manifest_sha256}"))
    return events
