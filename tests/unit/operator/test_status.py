"""status: Job/Pod state + termination message -> phase, conditions, result, events (table by table)."""

from __future__ import annotations

import json

import pytest

from finetune_api.status import FineTuneJobStatus, Progress
from finetune_operator.status import Observation, derive_status, transitions

NOW = "2025-01-01T00:00:00Z"
LATER = "2025-01-01T00:05:00Z"


def job(conditions=(), suspend=False, labels=None, **status) -> dict:
    return {"metadata": {"name": "demo", "labels": labels or {}}, "spec": {"suspend": suspend},
            "status": {"conditions": [{"type": t, "status": "True", "reason": r, "message": m}
                                      for t, r, m in conditions], **status}}


def pod(name="demo-0-abc", phase="Running", index="0", term=None, scheduled=None, gpus="2") -> dict:
    status: dict = {"phase": phase, "conditions": []}
    if scheduled:
        status["conditions"].append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": scheduled})
    if term is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    return {"metadata": {"name": name, "annotations": {"batch.kubernetes.io/job-completion-index": index}},
            "spec": {"containers": [{"name": "trainer", "resources": {"requests": {
                "cpu": "4", "memory": "32Gi", "nvidia.com/gpu": gpus}}}]},
            "status": status}


def obs(**kw) -> Observation:
    return Observation(**({"generation": 1, "suspend": False, "nodes": 1} | kw))


def cond(status: FineTuneJobStatus, ctype: str):
    return next((c for c in status.conditions if c.type == ctype), None)


def test_no_job_yet_is_pending():
    s = derive_status(obs(), None, NOW)
    assert s.phase == "Pending" and cond(s, "Created").status == "False"
    assert s.observed_generation == 1


def test_all_pods_running_is_running_with_progress():
    p = Progress(step=30, total_steps=100, percent="30%", loss=1.5)
    s = derive_status(obs(job=job(startTime=NOW), pods=[pod()], progress=p), None, NOW)
    assert s.phase == "Running" and s.start_time == NOW
    assert cond(s, "Running").status == "True" and "step 30/100" in s.message
    assert s.progress.percent == "30%"


def test_partially_running_multi_node_is_pending():
    s = derive_status(obs(nodes=2, job=job(), pods=[pod(), pod("demo-1-x", "Pending", "1")]), None, NOW)
    assert s.phase == "Pending" and "1/2" in cond(s, "Running").message


def test_unschedulable_names_what_is_missing():
    msg = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    s = derive_status(obs(job=job(), pods=[pod(phase="Pending", scheduled=msg)]), None, NOW)
    c = cond(s, "Scheduled")
    assert s.phase == "Pending" and c.status == "False" and c.reason == "Unschedulable"
    assert "2 nvidia.com/gpu" in c.message and "Insufficient nvidia.com/gpu" in c.message
    assert [e.reason for e in transitions(None, s)] == ["Unschedulable"]  # no Normal "Pending" repeating it


def test_success_takes_the_result_from_rank_zero_termination_message():
    doc = {"outcome": "Succeeded", "steps": 300, "finalLoss": 0.42, "finalEvalLoss": 0.5,
           "outputPath": "/mnt/output/run1", "manifestSha256": "ab" * 32}
    pods = [pod("demo-1-x", "Succeeded", "1", term={"exitCode": 0}),
            pod("demo-0-x", "Succeeded", "0", term={"exitCode": 0, "message": json.dumps(doc)})]
    s = derive_status(obs(nodes=2, job=job([("Complete", "CompletionsReached", "")], completionTime=LATER), pods=pods),
                      None, NOW)
    assert s.phase == "Succeeded" and s.completion_time == LATER
    assert s.result.manifest_sha256 == "ab" * 32 and s.result.final_loss == 0.42 and s.result.steps == 300
    assert s.progress.percent == "100%"
    assert cond(s, "Succeeded").status == "True" and cond(s, "Running").reason == "Completed"
    assert "/mnt/output/run1" in s.message


def test_result_arriving_after_success_is_recorded_once():
    done = job([("Complete", "CompletionsReached", "")])
    first = derive_status(obs(job=done, pods=[pod(phase="Succeeded", term={"exitCode": 0})]), None, NOW)
    assert first.result is None
    doc = {"outcome": "Succeeded", "steps": 3, "finalLoss": 1.0, "outputPath": "/o", "manifestSha256": "x"}
    second = derive_status(obs(job=done, pods=[pod(phase="Succeeded", term={"exitCode": 0, "message": json.dumps(doc)})]),
                           first, LATER)
    assert second.result.output_path == "/o"
    assert [e.reason for e in transitions(first, second)] == ["ResultRecorded"]


def test_trainer_failure_reason_and_message_reach_status():
    doc = {"outcome": "Failed", "reason": "DataError", "message": "train.jsonl:3: missing 'messages'"}
    failed = job([("Failed", "PodFailurePolicy", "Container trainer for pod demo-0-x failed with exit code 2")])
    s = derive_status(obs(job=failed, pods=[pod(phase="Failed", term={"exitCode": 2, "message": json.dumps(doc),
                                                                      "finishedAt": NOW})]), None, NOW)
    c = cond(s, "Failed")
    assert s.phase == "Failed" and c.reason == "DataError" and "train.jsonl:3" in c.message
    assert "PodFailurePolicy" in c.message and s.completion_time == NOW
    ev = transitions(None, s)
    assert ev[-1].type == "Warning" and ev[-1].reason == "Failed" and "DataError" in ev[-1].message


def test_failure_without_termination_message_uses_exit_code():
    failed = job([("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")])
    s = derive_status(obs(job=failed, pods=[pod(phase="Failed", term={"exitCode": 137, "reason": "OOMKilled"})]),
                      None, NOW)
    c = cond(s, "Failed")
    assert c.reason == "PodFailed" and "code 137 (OOMKilled)" in c.message and "backoff limit" in c.message


def test_suspended_by_user_and_queued_by_kueue():
    s = derive_status(obs(suspend=True, job=job(suspend=True)), None, NOW)
    assert s.phase == "Suspended" and cond(s, "Suspended").reason == "SuspendedByUser"
    q = derive_status(obs(job=job(suspend=True, labels={"kueue.x-k8s.io/queue-name": "team-a"})), None, NOW)
    assert q.phase == "Pending" and cond(q, "Suspended").reason == "Queued" and "team-a" in q.message


def test_resume_after_suspend_records_the_transition():
    s1 = derive_status(obs(suspend=True, job=job(suspend=True)), None, NOW)
    s2 = derive_status(obs(job=job(), pods=[pod()]), s1, LATER)
    assert s2.phase == "Running" and cond(s2, "Suspended").status == "False"
    assert cond(s2, "Suspended").last_transition_time == LATER
    assert [e.reason for e in transitions(s1, s2)] == ["Running"]


def test_unchanged_observation_keeps_transition_times_and_posts_nothing():
    s1 = derive_status(obs(job=job(), pods=[pod()]), None, NOW)
    s2 = derive_status(obs(job=job(), pods=[pod()]), s1, LATER)
    assert s1.to_wire() == s2.to_wire() and transitions(s1, s2) == []


def test_invalid_spec_is_failed_and_transient_error_is_visible():
    bad = derive_status(obs(error=("InvalidSpec", "spec.model.path ..."), error_is_permanent=True), None, NOW)
    assert bad.phase == "Failed" and cond(bad, "Failed").reason == "InvalidSpec"
    temp = derive_status(obs(job=job(), pods=[pod()], error=("ReconcileError", "503")), None, NOW)
    assert temp.phase == "Running" and cond(temp, "Reconciled").status == "False"
    assert any(e.reason == "ReconcileError" for e in transitions(None, temp))
    healed = derive_status(obs(job=job(), pods=[pod()]), temp, LATER)
    assert cond(healed, "Reconciled").status == "True"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_terminal_phase_is_final(phase):
    cond_type = "Complete" if phase == "Succeeded" else "Failed"
    s = derive_status(obs(job=job([(cond_type, "X", "y")])), None, NOW)
    again = derive_status(obs(job=job([(cond_type, "X", "y")]), pods=[]), s, LATER)
    assert again.phase == phase and again.completion_time == s.completion_time
