"""What `finetune submit --watch`, `status` and `list` print, from statuses as the API defines them."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest

from finetune_api.status import FineTuneJobStatus
from finetune_cli import job_view
from finetune_cli.kube import AlreadyExists, NotFound, _no_api, refusal
from finetune_cli.watching import TIMED_OUT, Display, watch

NOW = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def status(phase="Running", conditions=(), **kw) -> FineTuneJobStatus:
    conds = [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conditions]
    return FineTuneJobStatus.model_validate({"phase": phase, "conditions": conds, **kw})


def obj(name="a", phase="Running", spec=None, **st) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-12-01T11:58:00Z"},
            "spec": spec or {"model": {"hubId": "meta-llama/Llama-3.1-8B"}, "method": {"type": "qlora"},
                             "distributed": {"nodes": 2, "gpusPerNode": 8}},
            "status": {"phase": phase, **st}}


@pytest.mark.parametrize("progress, want", [
    (None, "Pending"),
    ({"step": 3}, "Running  step 3"),
    ({"step": 25, "totalSteps": 100, "percent": "25%", "loss": 1.23456, "evalLoss": 1.5, "tokensPerSecond": 45678.0,
      "etaSeconds": 3725},
     "Running  [######..................] 25%  step 25/100  loss 1.2346  eval 1.5000  46k tok/s  ETA 1h02m"),
])
def test_progress_line(progress, want):
    st = status("Pending" if progress is None else "Running", progress=progress)
    assert job_view.progress_line(st) == want


def test_condition_changes_name_each_new_reason_once():
    a = status(conditions=[("Created", "True", "ChildrenCreated", "Job a created")])
    b = status(conditions=[("Created", "True", "ChildrenCreated", "Job a created"),
                           ("Scheduled", "False", "Unschedulable", "pod a-0 waits for 8 nvidia.com/gpu")])
    assert job_view.condition_changes(None, a) == ["Created=True ChildrenCreated: Job a created"]
    assert job_view.condition_changes(a, b) == ["Scheduled=False Unschedulable: pod a-0 waits for 8 nvidia.com/gpu"]
    assert job_view.condition_changes(b, b) == []


@pytest.mark.parametrize("st, code, first", [
    (status("Succeeded", message="training finished: 10 steps", result={"outputPath": "/out", "manifestSha256": "ab"}),
     0, "Succeeded: training finished: 10 steps"),
    (status("Failed", conditions=[("Failed", "True", "OutOfMemory", "rank 1: CUDA out of memory")]), 1,
     "Failed: OutOfMemory: rank 1: CUDA out of memory"),
    (status("Suspended", message="spec.suspend is true: trainer pods stopped"), 143,
     "Suspended: spec.suspend is true: trainer pods stopped"),
    (status("Running"), None, None),
    (status("Pending", conditions=[("Suspended", "True", "Queued", "queued by Kueue")]), None, None),
])
def test_outcome_is_the_exit_code(st, code, first):
    got, lines = job_view.outcome(st)
    assert got == code
    assert (lines[0] if lines else None) == first
    if code == 0:
        assert lines[1] == "output: /out  (manifest sha256 ab)"


def test_list_table_has_kubectls_columns_plus_model_method_gpus():
    objs = [obj("b", "Pending"), obj("a", progress={"step": 5, "totalSteps": 10, "percent": "50%", "loss": 0.5})]
    lines = job_view.list_table(objs, NOW).splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "MODEL", "METHOD", "GPUS", "AGE"]
    assert lines[1].split() == ["a", "Running", "50%", "0.5000", "meta-llama/Llama-3.1-8B", "qlora", "2x8", "2m00s"]
    assert lines[2].split() == ["b", "Pending", "meta-llama/Llama-3.1-8B", "qlora", "2x8", "2m00s"]
    assert job_view.list_table(objs, NOW, namespaces=True).splitlines()[1].startswith("ns ")


def test_describe_lists_conditions_pods_and_events():
    o = obj(conditions=[{"type": "Running", "status": "True", "reason": "PodsRunning", "message": "2/2 running",
                         "lastTransitionTime": "2026-12-01T11:59:00Z"}], message="2/2 trainer pods running")
    o["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "team-a"}
    pods = [{"metadata": {"name": "a-0-x", "annotations": {"batch.kubernetes.io/job-completion-index": "0"},
                          "creationTimestamp": "2026-12-01T11:59:30Z"},
             "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}]
    events = [{"type": "Normal", "reason": "Running", "message": "2/2 trainer pods running",
               "lastTimestamp": "2026-12-01T11:59:00Z"}]
    out = job_view.describe(o, events, pods, NOW)
    assert "Queue:      team-a (Kueue)" in out
    assert "Running   True     PodsRunning   1m00s   2/2 running" in out
    assert "a-0-x   0      Running   n1     30s" in out
    assert "Normal   Running   1m00s   2/2 trainer pods running" in out


def test_display_redraws_in_place_on_a_terminal_and_prints_plain_lines_elsewhere():
    a = status(conditions=[("Created", "True", "ChildrenCreated", "ok")], progress={"step": 1, "totalSteps": 4})
    b = status(conditions=[("Created", "True", "ChildrenCreated", "ok")], progress={"step": 2, "totalSteps": 4})
    c = status(conditions=[("Created", "True", "ChildrenCreated", "ok"), ("Scheduled", "True", "Scheduled", "")],
               progress={"step": 2, "totalSteps": 4})
    tty, plain = io.StringIO(), io.StringIO()
    for out, is_tty in ((tty, True), (plain, False)):
        d = Display(out, is_tty)
        for st in (a, b, b, c):
            d.update(st)
        d.close()
    assert plain.getvalue().splitlines() == [
        "Created=True ChildrenCreated: ok", "Running  [######..................] 25%  step 1/4",
        "Running  [############............] 50%  step 2/4", "Scheduled=True Scheduled"]
    t = tty.getvalue()
    assert t.count("\r\x1b[2K") >= 3 and t.endswith("step 2/4\n")
    assert "\r\x1b[2KScheduled=True Scheduled\nRunning  [####" in t  # printed above, the bar drawn again


def test_watch_returns_the_outcome_or_124_or_says_no_operator_answers(capsys):
    ticks = iter(range(1000))
    clock = lambda: float(next(ticks))  # noqa: E731 - one second per look
    done = [("object", obj(phase="Pending")), ("object", obj(phase="Succeeded", message="done"))]
    assert watch(iter(done), Display(io.StringIO(), False), "a", clock=clock) == 0
    out = io.StringIO()
    silent = [("object", {"metadata": {"name": "a"}})] + [("idle", None)] * 50
    assert watch(iter(silent), Display(out, False), "a", timeout=40, no_operator_after=30, clock=clock) == TIMED_OUT
    assert "no operator has reported on a for 30s" in out.getvalue()
    assert "stopped watching after 40s; the job goes on (finetune status a)" in capsys.readouterr().err
    assert watch(iter([("deleted", None)]), Display(io.StringIO(), False), "a") == 1


class ApiError(Exception):
    def __init__(self, status, body):
        self.status, self.body, self.reason = status, json.dumps(body), "x"


def test_api_refusals_are_said_in_the_api_servers_words():
    causes = [{"field": "spec.training.learningRate", "message": "Invalid value: 5: must be <= 1"}]
    e = refusal(ApiError(422, {"message": "invalid", "details": {"causes": causes}}), "FineTuneJob ns/a")
    assert str(e) == ("the API server refused FineTuneJob ns/a:\n"
                      "  spec.training.learningRate: Invalid value: 5: must be <= 1")
    assert isinstance(refusal(ApiError(409, {"message": 'finetunejobs "a" already exists'}), "x"), AlreadyExists)
    missing = refusal(ApiError(404, {"message": 'finetunejobs.finetune.io "a" not found'}), "FineTuneJob ns/a", "prod")
    assert isinstance(missing, NotFound) and str(missing).startswith("FineTuneJob ns/a not found in context prod")
    assert "ask your cluster admin for rights on finetunejobs.finetune.io" in str(refusal(ApiError(403, {"message": "forbidden"}), "x"))
    # a 404 for the kind itself (no CRD) is told apart from one for a named object
    assert _no_api(ApiError(404, {"message": "the server could not find the requested resource"}))
    assert not _no_api(ApiError(404, {"message": 'finetunejobs.finetune.io "a" not found',
                                      "details": {"name": "a", "kind": "finetunejobs"}}))


def test_cluster_commands_without_a_kubeconfig_say_what_to_do(tmp_path, monkeypatch, capsys):
    from finetune_cli.main import main

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["list"]) == 2
    assert "no usable kubeconfig" in capsys.readouterr().err
