"""failure_policy: what the pods say about restarts, the attempt, the failure behind a restart and a group restart."""

from __future__ import annotations

import pytest
from support.fake_cluster import make_job, make_pod

from finetune_operator.failure_policy import attempt, last_failure, pods_to_stop, restarts

CRASH = {"exitCode": 1, "reason": "Error", "message": "boom", "finishedAt": "2025-01-01T00:05:00Z"}
SIGTERM = {"exitCode": 143, "reason": "Error", "finishedAt": "2025-01-01T00:05:01Z"}


@pytest.mark.parametrize("pods,want", [
    ([make_pod()], 0),
    ([make_pod(phase="Failed", term=CRASH)], 1),  # failed, not yet replaced
    ([make_pod(phase="Failed", term=CRASH), make_pod(phase="Pending", failures=1, created="2025-01-01T00:06:00Z")], 1),
    ([make_pod(failures=1, ignored=2)], 3),  # counted and uncounted restarts alike
    ([make_pod(phase="Failed", term=SIGTERM, deleting=True)], 0),  # stopped on purpose (suspend): not a restart
    ([make_pod("0", failures=0, ignored=1), make_pod("1", failures=1)], 1),  # a group restart is one restart
])
def test_restarts_are_read_from_the_pods(pods, want):
    assert restarts(pods) == want


def test_attempt_counts_a_crash_before_the_job_controller_does():
    job = make_job(failed=0)
    assert attempt(job, [make_pod()]) == (1, 4)
    assert attempt(job, [make_pod(phase="Failed", term=CRASH)]) == (2, 4)
    assert attempt(make_job(failed=3), [make_pod(failures=3)]) == (4, 4)
    assert attempt(job, [make_pod(phase="Failed", term=SIGTERM)]) == (1, 4)  # preemption is free


def test_the_crash_not_the_peer_it_stopped_explains_a_group_restart():
    crashed = make_pod("1", phase="Failed", term=CRASH)
    stopped = make_pod("0", phase="Failed", term=SIGTERM, deleting=True)
    f = last_failure([stopped, crashed])
    assert f.index == "1" and f.exit_code == 1 and f.counted
    assert "exited with code 1 (Error): boom" in f.describe()


def test_only_the_failed_attempts_running_peers_are_stopped():
    crashed = make_pod("1", phase="Failed", term=CRASH, created="2025-01-01T00:00:02Z")
    peer = make_pod("0", created="2025-01-01T00:00:02Z")
    replacement = make_pod("1", phase="Pending", failures=1, created="2025-01-01T00:05:30Z", name="demo-1-new")
    assert [p["metadata"]["name"] for p in pods_to_stop([crashed, peer, replacement], nodes=2)] == [peer["metadata"]["name"]]
    assert pods_to_stop([crashed, peer], nodes=1) == []  # one node: the Job controller replaces it, nothing to stop
    assert pods_to_stop([make_pod("0"), make_pod("1")], nodes=2) == []
