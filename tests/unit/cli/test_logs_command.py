"""`finetune logs`: which pod a rank is, what is said while it has not started, and following a restarted pod.

The API is played by an in-memory stand-in for kube.Kube (the cluster tier runs the real one); what is asserted is
what the user reads.
"""

from __future__ import annotations

import argparse

import pytest

from finetune_api.contract import UserError
from finetune_cli import cluster_commands


def pod(name, index, uid, running=True, created="2026-12-01T10:00:00Z"):
    state = {"running": {"startedAt": created}} if running else {"waiting": {"reason": "ContainerCreating"}}
    return {"metadata": {"name": name, "uid": uid, "creationTimestamp": created,
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "status": {"phase": "Running" if running else "Pending",
                       "containerStatuses": [{"name": "trainer", "state": state}]}}


class FakeKube:
    def __init__(self, pods, logs, phases=("Running",), nodes=2):
        self.namespace = "ns"
        self._pods, self._logs, self._phases, self.nodes = pods, logs, list(phases), nodes

    def get(self, name):
        phase = self._phases.pop(0) if len(self._phases) > 1 else self._phases[0]
        return {"metadata": {"name": name}, "spec": {"distributed": {"nodes": self.nodes}}, "status": {"phase": phase}}

    def pods(self, name):
        return self._pods() if callable(self._pods) else self._pods

    def log_lines(self, pod, follow, tail=None):
        yield from self._logs[pod]


def args(**kw):
    base = dict(name="job", namespace=None, context=None, follow=False, rank=0, tail=None, wait=5.0)
    return argparse.Namespace(**base | kw)


def run(monkeypatch, kube, **kw):
    monkeypatch.setattr(cluster_commands, "Kube", lambda **_: kube)
    monkeypatch.setattr(cluster_commands.time, "sleep", lambda s: None)
    return cluster_commands.cmd_logs(args(**kw))


def test_rank_selects_the_newest_pod_of_that_index(monkeypatch, capsys):
    pods = [pod("job-0-a", 0, "u0"), pod("job-1-a", 1, "u1"), pod("job-1-b", 1, "u2", created="2026-12-01T11:00:00Z")]
    kube = FakeKube(pods, {"job-1-b": ["step 1 loss 2.0", "step 2 loss 1.5"]})
    assert run(monkeypatch, kube, rank=1) == 0
    assert capsys.readouterr().out.splitlines() == ["step 1 loss 2.0", "step 2 loss 1.5"]


def test_a_rank_the_job_does_not_have_is_refused_naming_the_ranks(monkeypatch):
    with pytest.raises(UserError, match=r"--rank 2: FineTuneJob job has 2 node\(s\), ranks 0-1"):
        run(monkeypatch, FakeKube([], {}), rank=2)


def test_a_pod_that_has_not_started_says_why(monkeypatch):
    with pytest.raises(UserError, match="pod job-0-a has not started: ContainerCreating"):
        run(monkeypatch, FakeKube([pod("job-0-a", 0, "u0", running=False)], {}))


def test_follow_continues_with_the_restarted_pod_until_the_job_ends(monkeypatch, capsys):
    first, second = pod("job-0-a", 0, "u0"), pod("job-0-b", 0, "u1", created="2026-12-01T11:00:00Z")
    listings = iter([[first], [first], [first, second], [first, second]])
    kube = FakeKube(lambda: next(listings, [first, second]), {"job-0-a": ["step 1", "stopped: SIGTERM"],
                                                             "job-0-b": ["resumed from step 1", "done"]},
                    phases=("Running", "Running", "Succeeded"))
    assert run(monkeypatch, kube, follow=True) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines() == ["step 1", "stopped: SIGTERM", "resumed from step 1", "done"]
    assert "--- pod job-0-b (started again) ---" in cap.err
