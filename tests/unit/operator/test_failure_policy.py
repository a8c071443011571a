"""failure_policy: what the pods say about restarts, the attempt, the failure behind a restart and a group restart."""

from __future__ import annotations

import pytest
from support.fake_cluster import make_job, make_pod

from finetune_operator.failure_policy import STOPPED_FOR, attempt, last_failure, pods_to_stop, restarts

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
    assert [(p["metadata"]["name"], why) for p, why in pods_to_stop([crashed, peer, replacement], nodes=2)] == \
        [(peer["metadata"]["name"], crashed["metadata"]["name"])]
    assert pods_to_stop([crashed, peer], nodes=1) == []  # one node: the Job controller replaces it, nothing to stop
    assert pods_to_stop([make_pod("0"), make_pod("1")], nodes=2) == []


def _stopped_for(pod: dict, failed: dict) -> dict:
    pod["metadata"]["annotations"][STOPPED_FOR] = failed["metadata"]["name"]
    return pod


def test_a_peer_stopped_for_a_group_restart_does_not_stop_the_replacements():
    # rank 1 crashed at 05:00 and was replaced at 05:01; rank 0, stopped for it, ended only at 05:03 (a loaded
    # control plane): its end must not stop rank 1's replacement, whose end would stop rank 0's, and so on
    crashed = make_pod("1", phase="Failed", term=CRASH, created="2025-01-01T00:00:02Z")
    stopped = _stopped_for(make_pod("0", phase="Failed", created="2025-01-01T00:00:02Z", deleting=True,
                                    term={**SIGTERM, "finishedAt": "2025-01-01T00:05:03Z"}), crashed)
    replacement = make_pod("1", failures=1, created="2025-01-01T00:05:01Z", name="demo-1-new")
    assert pods_to_stop([crashed, stopped, replacement], nodes=2) == []
    # the same peer stopped by someone else (kubectl delete pod, a drain) is a failure of its own: its peers stop
    unmarked = make_pod("0", phase="Failed", created="2025-01-01T00:00:02Z", deleting=True,
                        term={**SIGTERM, "finishedAt": "2025-01-01T00:05:03Z"})
    running = make_pod("1", created="2025-01-01T00:00:02Z")
    assert [p["metadata"]["name"] for p, _ in pods_to_stop([unmarked, running], nodes=2)] == [running["metadata"]["name"]]


def test_a_replacement_is_not_stopped_for_a_peer_of_the_attempt_before_it():
    # rank 1 crashed at 05:00 and was replaced at 05:01; rank 0 then failed by itself (exit 3: its peer was gone)
    # at 05:02, before the operator stopped it: the replacement belongs to the next attempt and keeps running
    crashed = make_pod("1", phase="Failed", term=CRASH, created="2025-01-01T00:00:02Z")
    peer_gone = make_pod("0", phase="Failed", created="2025-01-01T00:00:02Z",
                         term={"exitCode": 3, "reason": "Error", "finishedAt": "2025-01-01T00:05:02Z"})
    replacement = make_pod("1", failures=1, created="2025-01-01T00:05:01Z", name="demo-1-new")
    assert pods_to_stop([crashed, peer_gone, replacement], nodes=2) == []
    # a crash of that next attempt stops its peers again
    second = make_pod("0", phase="Failed", failures=1, created="2025-01-01T00:05:04Z", name="demo-0-new",
                      term={**CRASH, "finishedAt": "2025-01-01T00:07:00Z"})
    assert [p["metadata"]["name"] for p, _ in pods_to_stop([crashed, peer_gone, replacement, second], nodes=2)] == \
        ["demo-1-new"]


def test_a_crash_in_the_second_the_pods_were_created_still_stops_the_peer_not_the_replacement():
    same = "2025-01-01T00:00:02Z"  # timestamps have one-second resolution
    crashed = make_pod("1", phase="Failed", created=same, term={**CRASH, "finishedAt": same})
    peer = make_pod("0", created=same)
    replacement = make_pod("1", failures=1, created=same, name="demo-1-new")
    assert [p["metadata"]["name"] for p, _ in pods_to_stop([crashed, peer, replacement], nodes=2)] == \
        [peer["metadata"]["name"]]


def _without_counts(pod: dict) -> dict:
    for key in ("batch.kubernetes.io/job-index-failure-count", "batch.kubernetes.io/job-index-ignored-failure-count"):
        pod["metadata"]["annotations"].pop(key, None)
    return pod


def test_without_per_index_counts_a_peer_stopped_for_a_group_restart_stops_nothing():
    crashed = _without_counts(make_pod("1", phase="Failed", term=CRASH, created="2025-01-01T00:00:02Z"))
    stopped = _without_counts(_stopped_for(make_pod("0", phase="Failed", created="2025-01-01T00:00:02Z",
                                                    deleting=True,
                                                    term={**SIGTERM, "finishedAt": "2025-01-01T00:05:03Z"}), crashed))
    replacement = _without_counts(make_pod("1", created="2025-01-01T00:05:01Z", name="demo-1-new"))
    assert pods_to_stop([crashed, stopped, replacement], nodes=2) == []
    peer = _without_counts(make_pod("0", created="2025-01-01T00:00:02Z"))
    assert [p["metadata"]["name"] for p, _ in pods_to_stop([crashed, peer], nodes=2)] == [peer["metadata"]["name"]]
