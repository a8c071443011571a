"""reconcile: one Reconciler.reconcile call per case against an in-memory cluster, then a diff of what it wrote.

Table-driven like kueue's TestReconciler (pkg/controller/jobs/job/job_controller_test.go): each case is a World (the
FineTuneJob, its Job, pods and children as the watches saw them) and what a user would then find - the phase and
conditions in status, the children created, the Events posted, the other writes (suspend, a stopped pod, an adopted
claim). Cases named for the review's mutations fail when that mutation is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import pytest
from support.fake_cluster import (NS, UID, FakeCluster, all_children, make_ftj, make_job, make_pod, merge, world)
from finetune_operator import names
from finetune_operator.reconcile import Child, Reconciler, World, merge_patch

NOW = "2025-01-01T00:10:00Z"
RUNNING = {"phase": "Running", "observedGeneration": 1, "conditions": [
    {"type": "Created", "status": "True", "reason": "ChildrenCreated", "message": "Job demo created",
     "lastTransitionTime": "2025-01-01T00:00:01Z", "observedGeneration": 1},
    {"type": "Running", "status": "True", "reason": "PodsRunning", "message": "1/1 trainer pods running",
     "lastTransitionTime": "2025-01-01T00:00:05Z", "observedGeneration": 1}],
    "progress": {"step": 5, "totalSteps": 10, "percent": "50%", "loss": 1.0, "etaSeconds": 30.0,
                 "tokensPerSecond": 1200.0}}
RESULT = {"outcome": "Succeeded", "steps": 10, "finalLoss": 0.5, "outputPath": "/out", "manifestSha256": "ab"}


@dataclass
class Case:
    world: World
    phase: Optional[str]
    conditions: dict = field(default_factory=dict)  # type -> (status, reason), a subset of what is written
    creates: list = field(default_factory=list)  # kinds created, in order
    writes: list = field(default_factory=list)  # other writes: suspend, stop_pod, set_owner
    events: list = field(default_factory=list)  # (type, reason) posted
    message: str = ""  # a fragment of status.message
    absent: list = field(default_factory=list)  # dotted status keys that must not be there afterwards
    fail_on: dict = field(default_factory=dict)
    kueue: tuple = (False, None)  # (Kueue installed, the Job's Workload)
    objects: dict = field(default_factory=dict)  # what cluster.read finds: (kind, name) -> object
    values: dict = field(default_factory=dict)  # dotted status key -> value it must have


def workload(active: bool = True, evicted: Optional[str] = None, evictions: int = 0,
             pending: Optional[str] = None) -> dict:
    """A Kueue Workload as its controller leaves it (v1beta2): evicted for a reason, evictions counted."""
    conds = []
    if evicted:
        conds.append({"type": "Evicted", "status": "True", "reason": evicted, "message": f"{evicted} by test"})
    if pending:
        conds.append({"type": "QuotaReserved", "status": "False", "reason": "Pending", "message": pending})
    stats = {"evictions": [{"reason": "Preempted", "underlyingCause": "", "count": evictions}]} if evictions else {}
    return {"metadata": {"name": "job-demo-abc12"}, "spec": {"active": active},
            "status": {"conditions": conds} | ({"schedulingStats": stats} if stats else {})}


def unplaced(message: str) -> dict:
    """A pending trainer pod the scheduler could not place, saying `message`."""
    pod = make_pod(phase="Pending")
    pod["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                    "message": message}]
    pod["status"]["containerStatuses"] = []
    return pod


CLAIMS_SPEC = dict(dataset={"paths": ["train.jsonl"], "format": "messages", "volume": {"claimName": "finetune-data"}},
                   output={"path": "o", "volume": {"create": {"size": "1Gi"}}})
SCHEDULER_ON_CLAIMS = "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"


CASES = {
    "new job: every child created, then Pending": Case(
        world(make_ftj()), "Pending", {"Created": ("True", "ChildrenCreated"), "Running": ("False", "Starting")},
        creates=["ServiceAccount", "ConfigMap", "Service", "Job"], events=[("Normal", "Pending")]),
    "deleted ConfigMap is created again, nothing else": Case(
        world(make_ftj(status=RUNNING), make_job(), [make_pod()],
              children={k: v for k, v in all_children().items() if k[0] != "ConfigMap"}),
        "Running", creates=["ConfigMap"]),
    "deleted Job of a running job is created again": Case(
        world(make_ftj(status=RUNNING), None, children={k: v for k, v in all_children().items() if k[0] != "Job"}),
        "Pending", creates=["Job"], events=[("Normal", "Pending")]),
    # mutation: the terminal-phase skip
    "finished job whose children are gone: nothing recreated, nothing written": Case(
        world(make_ftj(status={"phase": "Succeeded", "observedGeneration": 1}), None, children={}), "Succeeded"),
    "failed job (invalid spec) is never retried": Case(
        world(make_ftj(status={"phase": "Failed", "observedGeneration": 1, "conditions": [
            {"type": "Failed", "status": "True", "reason": "InvalidSpec", "message": "x"}]}), None, children={}),
        "Failed"),
    # mutation: PermanentError -> TemporaryError (the decision moved into the reconciler)
    "invalid spec fails permanently, naming the field": Case(
        world(make_ftj(output={"path": "relative/out"})), "Failed", {"Failed": ("True", "InvalidSpec")},
        events=[("Warning", "Failed")], message="spec.output.path"),
    "API error is transient: phase kept, Reconciled=False": Case(
        world(make_ftj(status=RUNNING), make_job(), [make_pod()],
              children={k: v for k, v in all_children().items() if k[0] != "Service"}),
        "Running", {"Reconciled": ("False", "ReconcileError")}, creates=["Service"],
        events=[("Warning", "ReconcileError")], fail_on={"create": 500}),
    "name taken by someone else's Service: ChildConflict, retried": Case(
        world(make_ftj(), None, children={("Service", "demo"): Child(frozenset({"someone"}))}),
        "Pending", {"Created": ("False", "ChildConflict")}, events=[("Warning", "ChildConflict")]),
    # mutation: the status-key removal
    "finished job keeps no stale throughput or ETA": Case(
        world(make_ftj(status=RUNNING), make_job(conditions=[("Complete", "CompletionsReached", "")]),
              [make_pod(phase="Succeeded", term={"exitCode": 0, "message": json.dumps(RESULT)})]),
        "Succeeded", {"Succeeded": ("True", "Completed")}, events=[("Normal", "Succeeded")],
        absent=["progress.tokensPerSecond"]),
    # mutation: the Suspended-condition pruning
    "never-suspended running job has no Suspended condition": Case(
        world(make_ftj(), make_job(), [make_pod()]), "Running", {"Running": ("True", "PodsRunning")},
        events=[("Normal", "Running")], absent=["conditions.Suspended"]),
    "spec.suspend mirrored onto the Job": Case(
        world(make_ftj(status=RUNNING, suspend=True), make_job(), [make_pod()]), "Running",
        writes=[("suspend", "demo", True)]),
    "a Kueue-queued Job is left for Kueue to resume": Case(
        world(make_ftj(labels={names.QUEUE_LABEL: "q"}), make_job(suspend=True, labels={names.QUEUE_LABEL: "q"})),
        "Pending", {"Suspended": ("True", "Queued")}, events=[("Normal", "Pending")],
        kueue=(True, workload(pending="couldn't assign flavors to pod set main: insufficient quota")),
        message="waiting for quota: couldn't assign flavors"),
    "suspending a queued job deactivates its Kueue Workload, not the Job (Kueue would undo that)": Case(
        world(make_ftj(status=RUNNING, labels={names.QUEUE_LABEL: "q"}, suspend=True),
              make_job(labels={names.QUEUE_LABEL: "q"}), [make_pod()]),
        "Running", writes=[("workload_active", False)], kueue=(True, workload())),
    "a queued job created suspended: its Workload is deactivated as soon as Kueue makes it": Case(
        world(make_ftj(labels={names.QUEUE_LABEL: "q"}, suspend=True,
                       status={"phase": "Suspended", "observedGeneration": 1}),
              make_job(suspend=True, labels={names.QUEUE_LABEL: "q"})),
        "Suspended", writes=[("workload_active", False)], kueue=(True, workload())),
    "resuming a queued job activates its Workload again (the status said Suspended)": Case(
        world(make_ftj(labels={names.QUEUE_LABEL: "q"}, status={"phase": "Suspended", "observedGeneration": 1}),
              make_job(suspend=True, labels={names.QUEUE_LABEL: "q"})),
        "Pending", writes=[("workload_active", True)], kueue=(True, workload(active=False, evicted="Deactivated")),
        events=[("Normal", "Pending")]),
    "queued job before Kueue made its Workload: nothing written (Kueue's webhook holds the Job)": Case(
        world(make_ftj(status=RUNNING, labels={names.QUEUE_LABEL: "q"}), make_job(suspend=True,
                                                                               labels={names.QUEUE_LABEL: "q"})),
        "Pending", writes=[], kueue=(True, None), events=[("Normal", "Pending")]),
    "queue label without Kueue installed: suspend goes to the Job": Case(
        world(make_ftj(status=RUNNING, labels={names.QUEUE_LABEL: "q"}, suspend=True),
              make_job(labels={names.QUEUE_LABEL: "q"}), [make_pod()]),
        "Running", writes=[("suspend", "demo", True)], kueue=(False, None)),
    "preempted by Kueue: Pending, Suspended=Preempted, a Warning, one restart": Case(
        world(make_ftj(status=RUNNING, labels={names.QUEUE_LABEL: "q"}),
              make_job(suspend=True, labels={names.QUEUE_LABEL: "q"})),
        "Pending", {"Suspended": ("True", "Preempted")}, events=[("Warning", "Preempted")],
        kueue=(True, workload(evicted="Preempted", evictions=1)), values={"restarts": 1},
        message="resumes from it when the ClusterQueue admits the job again"),
    "readmitted after a preemption: Running again, the restart counted": Case(
        world(make_ftj(labels={names.QUEUE_LABEL: "q"}, status={
            "phase": "Pending", "observedGeneration": 1, "restarts": 1, "conditions": [
                {"type": "Suspended", "status": "True", "reason": "Preempted", "message": "x",
                 "lastTransitionTime": "2025-01-01T00:05:00Z"}]}),
              make_job(labels={names.QUEUE_LABEL: "q"}), [make_pod()]),
        "Running", {"Suspended": ("False", "Resumed")}, events=[("Normal", "Running")],
        kueue=(True, workload(evictions=1)), values={"restarts": 1}),
    "succeeded without a gate: ReadyToServe": Case(
        world(make_ftj(status=RUNNING), make_job(conditions=[("Complete", "CompletionsReached", "")]),
              [make_pod(phase="Succeeded", term={"exitCode": 0, "message": json.dumps(RESULT)})]),
        "Succeeded", {"ReadyToServe": ("True", "NoGate")}, events=[("Normal", "Succeeded")]),
    "succeeded but the held-out loss misses spec.serving.gate: not ready, a Warning": Case(
        world(make_ftj(status=RUNNING, serving={"gate": {"maxEvalLoss": 0.4}}),
              make_job(conditions=[("Complete", "CompletionsReached", "")]),
              [make_pod(phase="Succeeded", term={"exitCode": 0, "message": json.dumps(
                  RESULT | {"finalEvalLoss": 0.61, "evalExactMatch": 0.25})})]),
        "Succeeded", {"ReadyToServe": ("False", "GateFailed")},
        events=[("Warning", "GateFailed"), ("Normal", "Succeeded")],
        values={"result.finalEvalLoss": 0.61, "result.evalExactMatch": 0.25}),
    "succeeded, the gate meets its thresholds: ready": Case(
        world(make_ftj(status=RUNNING, serving={"gate": {"maxEvalLoss": 0.7, "minExactMatch": 0.2}}),
              make_job(conditions=[("Complete", "CompletionsReached", "")]),
              [make_pod(phase="Succeeded", term={"exitCode": 0, "message": json.dumps(
                  RESULT | {"finalEvalLoss": 0.61, "evalExactMatch": 0.25})})]),
        "Succeeded", {"ReadyToServe": ("True", "GatePassed")}, events=[("Normal", "Succeeded")]),
    "a gate on a metric the run did not report: MetricMissing": Case(
        world(make_ftj(status=RUNNING, serving={"gate": {"minExactMatch": 0.5}}),
              make_job(conditions=[("Complete", "CompletionsReached", "")]),
              [make_pod(phase="Succeeded", term={"exitCode": 0, "message": json.dumps(RESULT)})]),
        "Succeeded", {"ReadyToServe": ("False", "MetricMissing")},
        events=[("Warning", "MetricMissing"), ("Normal", "Succeeded")]),
    "an output claim smaller than the plan's disk peak: a warning naming the claim": Case(
        world(make_ftj(model={"hubId": "meta-llama/Llama-3.1-8B"}, method={"type": "full"},
                       output={"path": "o", "volume": {"claimName": "small"}})),
        "Pending", {"OutputVolume": ("False", "OutputVolumeTooSmall")},
        creates=["ServiceAccount", "ConfigMap", "Service", "Job"], events=[("Warning", "OutputVolumeTooSmall")],
        objects={("PersistentVolumeClaim", "small"): {"spec": {"resources": {"requests": {"storage": "20Gi"}}},
                                                      "status": {"capacity": {"storage": "20Gi"}}}}),
    "an output claim that holds the plan's peak: no warning": Case(
        world(make_ftj(model={"hubId": "meta-llama/Llama-3.1-8B"}, method={"type": "full"},
                       output={"path": "o", "volume": {"claimName": "big"}})),
        "Pending", creates=["ServiceAccount", "ConfigMap", "Service", "Job"], events=[("Normal", "Pending")],
        objects={("PersistentVolumeClaim", "big"): {"status": {"capacity": {"storage": "2Ti"}}}},
        absent=["conditions.OutputVolume"]),
    "pod finished before the Job says Complete: Succeeded, not Pending": Case(
        world(make_ftj(status=RUNNING), make_job(), [make_pod(phase="Succeeded", term={"exitCode": 0})]),
        "Succeeded", events=[("Normal", "Succeeded")]),
    "missing PriorityClass: the Job cannot create pods": Case(
        world(make_ftj(status=RUNNING | {"phase": "Pending"}), make_job(),
              failed_create='pods "demo-0-" is forbidden: no PriorityClass with name training-high was found'),
        "Pending", {"Scheduled": ("False", "PriorityClassNotFound")}, events=[("Warning", "PriorityClassNotFound")],
        message="PriorityClass training-high"),
    "missing Secret: the container cannot start": Case(
        world(make_ftj(hfTokenSecretRef={"name": "hf-token"}), make_job(), [make_pod(phase="Pending", waiting={
            "reason": "CreateContainerConfigError", "message": 'secret "hf-token" not found'})]),
        "Pending", {"Running": ("False", "SecretNotFound")}, events=[("Warning", "SecretNotFound")],
        message="spec.hfTokenSecretRef.name"),
    "crash, replacement starting: Restarting, attempt 2 of 4": Case(
        world(make_ftj(status=RUNNING), make_job(failed=1),
              [make_pod(phase="Failed", created="2025-01-01T00:00:02Z",
                        term={"exitCode": 1, "reason": "Error", "message": "CUDA error", "finishedAt": NOW}),
               make_pod(phase="Pending", created=NOW, failures=1)]),
        "Restarting", {"Restarting": ("True", "TrainerFailed")}, events=[("Warning", "Restarting")],
        message="attempt 2 of 4"),
    "multi-node: a rank crashed, its peer is stopped so the group restarts": Case(
        world(make_ftj(status=RUNNING, distributed={"nodes": 2}), make_job(failed=1),
              [make_pod("0", "Running", created="2025-01-01T00:00:02Z"),
               make_pod("1", "Failed", created="2025-01-01T00:00:02Z",
                        term={"exitCode": 1, "reason": "Error", "finishedAt": "2025-01-01T00:05:00Z"})]),
        "Restarting", writes=[("stop_pod", "demo-0-run0", "demo-1-fai0")], events=[("Warning", "Restarting")],
        message="restarting all trainer pods together"),
    "a missing data claim is named, though the scheduler speaks of unbound claims": Case(
        world(make_ftj(**CLAIMS_SPEC), make_job(), [unplaced(SCHEDULER_ON_CLAIMS)], children=all_children(pvc=True)),
        "Pending", {"Scheduled": ("False", "PersistentVolumeClaimNotFound")},
        events=[("Warning", "PersistentVolumeClaimNotFound")], message='"finetune-data" (spec.dataset.volume.claimName)',
        objects={("PersistentVolumeClaim", "demo-output"): {"status": {"phase": "Pending"}}}),
    "every claim exists but one is unbound: that one is named": Case(
        world(make_ftj(**CLAIMS_SPEC), make_job(), [unplaced(SCHEDULER_ON_CLAIMS)], children=all_children(pvc=True)),
        "Pending", {"Scheduled": ("False", "PersistentVolumeClaimNotBound")},
        events=[("Warning", "PersistentVolumeClaimNotBound")], message="PersistentVolumeClaims (demo-output)",
        objects={("PersistentVolumeClaim", "demo-output"): {"status": {"phase": "Pending"}},
                 ("PersistentVolumeClaim", "finetune-data"): {"status": {"phase": "Bound"}}}),
    "output claim kept from an earlier job is reused, not a conflict": Case(
        world(make_ftj(output={"path": "o", "volume": {"create": {"size": "1Gi"}}}), None,
              children={("PersistentVolumeClaim", "demo-output"): Child(frozenset(), {
                  names.JOB_NAME_LABEL: "demo", "app.kubernetes.io/managed-by": names.MANAGED_BY})}),
        "Pending", creates=["ServiceAccount", "ConfigMap", "Service", "Job"], events=[("Normal", "Pending")]),
    "kept claim of a job now whenDeleted: Delete is adopted": Case(
        world(make_ftj(status=RUNNING, output={"path": "o", "volume": {"create": {"size": "1Gi", "whenDeleted": "Delete"}}}),
              make_job(), [make_pod()], children=all_children() | {("PersistentVolumeClaim", "demo-output"): Child(
                  frozenset(), {names.JOB_NAME_LABEL: "demo", "app.kubernetes.io/managed-by": names.MANAGED_BY})}),
        "Running", writes=[("set_owner", "PersistentVolumeClaim", "demo-output", UID)]),
}


def _get(status: dict, dotted: str):
    node = status
    for part in dotted.split("."):
        if part and isinstance(node, list):
            node = next((c for c in node if c.get("type") == part), None)
        elif isinstance(node, dict):
            node = node.get(part)
        if node is None:
            return None
    return node


@pytest.mark.parametrize("name", list(CASES))
def test_reconciler(name):
    case = CASES[name]
    cluster = FakeCluster(case.world.ftj, case.fail_on, case.kueue, case.objects)
    Reconciler(cluster, "img:1", clock=lambda: NOW).reconcile(case.world)
    status = cluster.ftj.get("status") or {}
    assert status.get("phase") == case.phase, json.dumps(status, indent=1)
    conds = {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions") or []}
    assert {t: conds.get(t) for t in case.conditions} == case.conditions, json.dumps(status, indent=1)
    assert [c[1] for c in cluster.writes("create")] == case.creates
    others = [c for c in cluster.calls if c[0] in ("suspend", "stop_pod", "set_owner", "workload_active")]
    assert others == case.writes
    assert [(e["type"], e["reason"]) for e in cluster.events.values()] == case.events
    assert case.message in (status.get("message") or ""), status.get("message")
    for key, value in case.values.items():
        assert _get(status, key) == value, f"{key}: {json.dumps(status, indent=1)}"
    for key in case.absent:
        assert _get(status, key) is None, f"{key} still in status: {json.dumps(status, indent=1)}"


def test_unchanged_world_writes_nothing():
    w = world(make_ftj(status=RUNNING), make_job(), [make_pod()])
    cluster = FakeCluster(w.ftj)
    rec = Reconciler(cluster, "img:1", clock=lambda: NOW)
    rec.reconcile(w)
    first = list(cluster.calls)
    rec.reconcile(world(cluster.ftj | {"metadata": cluster.ftj["metadata"]}, make_job(), [make_pod()]))
    assert cluster.calls == first, cluster.calls[len(first):]


def test_a_crash_between_event_and_status_posts_no_event_twice():
    """The operator dies after posting the Running Event and before writing the status: the next operator derives
    the same transition, finds the Event, posts nothing, and writes the status."""
    w = world(make_ftj(), make_job(), [make_pod()])
    crashed = FakeCluster(w.ftj, fail_on={"patch_status": 500})
    with pytest.raises(Exception):
        Reconciler(crashed, "img:1", clock=lambda: NOW).reconcile(w)
    assert [e["reason"] for e in crashed.events.values()] == ["Running"]
    crashed.fail_on = {}
    Reconciler(crashed, "img:1", clock=lambda: "2025-01-01T00:11:00Z").reconcile(w)  # a new process, later
    assert [e["reason"] for e in crashed.events.values()] == ["Running"]
    assert crashed.ftj["status"]["phase"] == "Running"


def test_a_stale_watch_after_our_own_write_announces_nothing_again():
    """Our status write has not come back through the watch yet when the next pod event arrives."""
    stale = world(make_ftj(), make_job(), [make_pod()])
    cluster = FakeCluster(stale.ftj)
    rec = Reconciler(cluster, "img:1", clock=lambda: NOW)
    rec.reconcile(stale)
    done = world(make_ftj(), make_job(conditions=[("Complete", "CompletionsReached", "")]),
                 [make_pod(phase="Succeeded", term={"exitCode": 0})])  # the same stale FineTuneJob, a later world
    rec.reconcile(done)
    assert [e["reason"] for e in cluster.events.values()] == ["Running", "Succeeded"]


def test_merge_patch_deletes_removed_keys_at_every_depth():
    old = {"phase": "Running", "message": "m", "progress": {"step": 1, "etaSeconds": 3}}
    new = {"phase": "Succeeded", "progress": {"step": 2}}
    patch = merge_patch(old, new)
    assert patch == {"message": None, "phase": "Succeeded", "progress": {"step": 2, "etaSeconds": None}}
    assert merge(old, patch) == new
