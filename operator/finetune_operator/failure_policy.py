"""How a trainer Job fails, retries and restarts as a group, read back as restart counts and the last failure.

Why one module: the retry policy the operator writes into the Job (backoff, podFailurePolicy) and what it reads
back from the pods (how many restarts, which failure caused the last one, which pods belong to a failed attempt)
are one policy; if they lived apart, a new exit code could be retried by one side and reported as fatal by the
other. Pure functions, no I/O.

The policy (finetune_api.contract.ExitCode is the trainer's side of it):
- exit 2 (the user's spec, data or model) fails the Job at once: retrying cannot help;
- exit 143 (SIGTERM: preemption, eviction, the operator stopping a group) and a pod disruption (DisruptionTarget:
  a lost node, a drain) restart the pod without counting against the retry budget: the trainer checkpointed, or
  resumes from the newest checkpoint;
- anything else (a crash, exit 3 when a peer died) counts: BACKOFF_LIMIT failures fail the Job.
Per-index backoff (`backoffLimitPerIndex`, with `maxFailedIndexes: 0` so one exhausted index fails the Job) makes the
Job controller record on every replacement pod how many failures of its index came before it, counted and ignored:
the restart count is read from the pods themselves, so it survives an operator restart and needs no memory.

A multi-node job restarts as a group: when one pod fails, its peers of the same attempt are stopped (they would
otherwise wait in a collective until spec.distributed.timeoutSeconds and then exit 3, each costing a retry), and
the Job controller recreates every index; the rendezvous happens again and all ranks resume from the same checkpoint.
Which peers belong to the failed attempt is read from the same per-index counts (pods_to_stop); a stopped peer is
also marked (STOPPED_FOR), for `kubectl describe pod` and for clusters without those counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from finetune_api.contract import ExitCode

from . import names

BACKOFF_LIMIT = 3  # counted failures before the Job fails: attempts = BACKOFF_LIMIT + 1
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
IGNORED_FAILURE_COUNT = "batch.kubernetes.io/job-index-ignored-failure-count"
STOPPED_FOR = "finetune.io/stopped-for"  # on a pod the operator stops for a group restart: the failed peer's name


def job_failure_spec() -> dict:
    """The Job spec fields of the policy: retry budget, per-index accounting and the pod failure rules."""
    return {
        "backoffLimit": BACKOFF_LIMIT,
        "backoffLimitPerIndex": BACKOFF_LIMIT,
        "maxFailedIndexes": 0,
        "podReplacementPolicy": "Failed",  # a replacement starts only once the old pod has stopped (GPUs, rendezvous)
        "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": names.TRAINER_CONTAINER, "operator": "In",
                                                  "values": [int(ExitCode.INPUT_ERROR)]}},
            {"action": "Ignore", "onExitCodes": {"containerName": names.TRAINER_CONTAINER, "operator": "In",
                                                 "values": [int(ExitCode.PREEMPTED)]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]},
    }


@dataclass(frozen=True)
class Failure:
    """One failed trainer pod, as `kubectl describe pod` would tell it."""

    pod: str
    index: str
    exit_code: Optional[int]
    reason: str  # the container's (Error, OOMKilled) or the disruption's (DeletionByPodGC, PreemptionByScheduler)
    message: str  # the termination message or log tail, or the disruption's message
    finished_at: str
    counted: bool  # whether it used up one of the BACKOFF_LIMIT retries
    attempt: int = 0  # the attempt the pod belonged to (failures of its index before it)

    def describe(self) -> str:
        """`pod x (index 1) exited with code 1 (Error): ...` or `pod x (index 0) was disrupted: ...`."""
        head = f"pod {self.pod} (index {self.index})"
        if self.exit_code is None:
            return f"{head} was disrupted ({self.reason})" + (f": {self.message}" if self.message else "")
        what = "was stopped (SIGTERM)" if self.exit_code == ExitCode.PREEMPTED else "exited"
        text = f"{head} {what} with code {self.exit_code} ({self.reason})"
        return text + (f": {self.message}" if self.message else "")


def terminated(pod: dict) -> Optional[dict]:
    """The trainer container's terminated state, or None."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == names.TRAINER_CONTAINER:
            return (cs.get("state") or {}).get("terminated")
    return None


def index_of(pod: dict) -> str:
    """The pod's completion index (its node rank), "" when absent."""
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(COMPLETION_INDEX, "")


def phase_of(pod: dict) -> str:
    return (pod.get("status") or {}).get("phase") or "Pending"


def is_active(pod: dict) -> bool:
    """Pending or Running and not being deleted: part of the current attempt."""
    return phase_of(pod) in ("Pending", "Running") and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _disruption(pod: dict) -> Optional[dict]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "DisruptionTarget" and c.get("status") == "True":
            return c
    return None


def _prior_failures(pod: dict) -> int:
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    return int(notes.get(FAILURE_COUNT) or 0) + int(notes.get(IGNORED_FAILURE_COUNT) or 0)


def failure_of(pod: dict) -> Optional[Failure]:
    """The failure of a Failed pod (None for any other pod)."""
    if phase_of(pod) != "Failed":
        return None
    term, disrupted = terminated(pod) or {}, _disruption(pod)
    code = term.get("exitCode")
    counted = disrupted is None and code not in (int(ExitCode.PREEMPTED),)
    if disrupted is not None and code is None:
        return Failure(pod["metadata"]["name"], index_of(pod), None, disrupted.get("reason") or "Disrupted",
                       (disrupted.get("message") or "").strip(), disrupted.get("lastTransitionTime") or "", False,
                       _prior_failures(pod))
    text = (term.get("message") or "").strip()
    return Failure(pod["metadata"]["name"], index_of(pod), code, term.get("reason") or "Error", text[-1000:],
                   term.get("finishedAt") or (pod.get("metadata") or {}).get("deletionTimestamp") or "", counted,
                   _prior_failures(pod))


def last_failure(pods: list[dict]) -> Optional[Failure]:
    """What caused the latest restart: in the latest failed attempt, a counted failure (a crash) over the peers
    that were stopped because of it, then the most recent."""
    failures = [f for f in map(failure_of, pods) if f is not None]
    if not failures:
        return None
    return max(failures, key=lambda f: (f.attempt, f.counted, f.finished_at))


def restarts(pods: list[dict]) -> int:
    """How many times the trainer pods were started again: the most restarted index's failures, counted or not.

    A replacement pod carries its index's earlier failures (the Job controller's annotations); a failed pod not yet
    replaced adds its own, unless it is being deleted (stopped by a suspension or for a group restart: its
    replacement counts it). Without the annotations (a Job without per-index backoff) failed pods are counted.
    """
    def ended(pod: dict) -> bool:  # failed by itself, not stopped on purpose (suspend, a group restart)
        return phase_of(pod) == "Failed" and not (pod.get("metadata") or {}).get("deletionTimestamp")

    per_index: dict[str, int] = {}
    for pod in pods:
        notes, index = (pod.get("metadata") or {}).get("annotations") or {}, index_of(pod)
        if FAILURE_COUNT in notes:
            n = _prior_failures(pod) + int(ended(pod))
        else:
            n = sum(1 for p in pods if index_of(p) == index and ended(p))
        per_index[index] = max(per_index.get(index, 0), n)
    return max(per_index.values(), default=0)


def attempt(job: dict, pods: list[dict]) -> tuple[int, int]:
    """(this attempt, the most attempts): counted failures so far + 1, of BACKOFF_LIMIT + 1.

    Counted failures are the Job's own count, or - while the Job controller has not caught up with a pod that just
    failed - what the pods say: per index, the failures before its newest pod plus that pod's if it failed.
    """
    spec = job.get("spec") or {}
    limit = int(spec.get("backoffLimit", BACKOFF_LIMIT))
    newest: dict[str, dict] = {}
    for pod in pods:
        if index_of(pod) not in newest or _created(pod) >= _created(newest[index_of(pod)]):
            newest[index_of(pod)] = pod
    from_pods = 0
    for pod in newest.values():
        notes = (pod.get("metadata") or {}).get("annotations") or {}
        failure = failure_of(pod)
        from_pods += int(notes.get(FAILURE_COUNT) or 0) + int(failure is not None and failure.counted)
    failed = max(int((job.get("status") or {}).get("failed") or 0), from_pods)
    return min(failed + 1, limit + 1), limit + 1


def stopped_for_group(pod: dict) -> Optional[str]:
    """The failed peer for which the operator stopped this pod (its STOPPED_FOR annotation), or None."""
    return ((pod.get("metadata") or {}).get("annotations") or {}).get(STOPPED_FOR)


def _created(pod: dict) -> str:
    return (pod.get("metadata") or {}).get("creationTimestamp") or ""


def _generation(pod: dict) -> Optional[int]:
    """How many pods of its index came before it (the Job controller's per-index counts), None without them."""
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    return _prior_failures(pod) if FAILURE_COUNT in notes else None


def pods_to_stop(pods: list[dict], nodes: int) -> list[tuple[dict, str]]:
    """(pod, the failed peer's name) for each peer that still runs in a failed attempt: stop them so that the group
    restarts together.

    Attempts are told apart by generation: every attempt of a group ends each index once (by a failure or a stop),
    so the Job controller's per-index count of the pods before (failures + ignored failures) is the attempt's
    number, the same on every index. A running pod of another index is stopped for a failure of its own attempt or a
    later one (`gen <= failed gen`); its replacements, one generation on, never are, so neither a peer stopped late
    (it ends after the replacements were created) nor one that ended by itself (exit 3 once the first rank crashed)
    starts another round. Creation timestamps (one-second resolution) only keep a pod created after the failure,
    and a failure caught in the same second as the pods' creation (a crash at start-up) still stops its peers.
    Without the per-index counts (a cluster without `backoffLimitPerIndex`) a pod created strictly before the
    failure is stopped, and peers marked as stopped for a group restart (STOPPED_FOR) start none themselves.
    """
    if nodes < 2:
        return []
    causes = [(p, f) for p in pods if (f := failure_of(p)) is not None and f.finished_at and _created(p)]

    def stale(pod: dict, failed: dict, f: Failure) -> bool:
        if index_of(pod) == index_of(failed):  # one pod of an index runs at a time: this is its replacement
            return False
        mine, theirs = _generation(pod), _generation(failed)
        if mine is not None and theirs is not None:
            return mine <= theirs and _created(pod) <= f.finished_at
        return not stopped_for_group(failed) and _created(pod) < f.finished_at

    stop = []
    for pod in pods:
        if is_active(pod) and _created(pod):
            cause = next((f for failed, f in causes if stale(pod, failed, f)), None)
            if cause is not None:
                stop.append((pod, cause.pod))
    return stop
