"""Kueue and the FineTuneJob: the queue label reaches the Job; the Workload's conditions say why a job waits."""

from finetune_api import FineTuneJob
from finetune_operator import kueue
from finetune_operator.workload import build_job

JOB = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
       "metadata": {"name": "q", "namespace": "ns", "labels": {"kueue.x-k8s.io/queue-name": "team-a"}},
       "spec": {"model": {"path": "/m"}, "dataset": {"paths": ["/d.jsonl"], "format": "messages"},
                "output": {"path": "/tmp/o"}}}


def test_the_queue_label_reaches_the_job_which_kueue_suspends_itself():
    job = build_job(FineTuneJob.model_validate(JOB), uid="u", image="i")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["suspend"] is False  # Kueue's webhook suspends it; without Kueue it runs at once
    assert kueue.queue_name(job["metadata"]["labels"]) == "team-a" and kueue.queue_name({}) is None


def wl(*conds):
    return {"status": {"conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]}}


def test_queue_state_reads_the_workloads_conditions():
    assert kueue.queue_state(None, "team-a")[0] == "Queued"
    reason, msg = kueue.queue_state(wl(("QuotaReserved", "False", "Pending",
                                        "couldn't assign flavors to pod set main: insufficient quota for "
                                        "nvidia.com/gpu")), "team-a")
    assert reason == "Queued" and "insufficient quota for nvidia.com/gpu" in msg
    reason, msg = kueue.queue_state(wl(("Evicted", "True", "Preempted", "Preempted to accommodate a workload "
                                        "(UID: x) due to prioritization in the ClusterQueue")), "team-a")
    assert reason == "Preempted" and "resumes from it when the ClusterQueue admits" in msg
    assert kueue.queue_state(wl(("Evicted", "True", "Deactivated", "")), "team-a")[0] == "Deactivated"
    assert kueue.active_patch(True) == {"spec": {"active": False}}
    assert kueue.workload_selector("abc") == "kueue.x-k8s.io/job-uid=abc"
