"""The user's loop against a real control plane and the real operator: submit, watch, status, list, cancel, resume.

Every command is the real `finetune` CLI in a subprocess with a kubeconfig (as a user runs it); the operator runs
for real; kwok plays the trainer pods (pod_behaviour.py). What the tests assert is what the user reads and the exit
code a script gets. The trainer's progress reaches status.progress through the operator reading rank 0's metrics;
kwok's pods serve none, so one test writes that field as the operator would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cli_process import Running, finetune
from controlplane import ControlPlane, wait_for
from pod_behaviour import fails, finishes, kubelet_reports, runs_long
from scenario import children, ftj, get_ftj, install_crd, running_operator, wait_phase

NODE = "gpu-cli"


@pytest.fixture(scope="module")
def cp(control_plane: ControlPlane) -> ControlPlane:
    install_crd(control_plane)
    control_plane.add_gpu_node(NODE, gpus=8)
    yield control_plane
    control_plane.kubectl("delete", "node", NODE, "--wait=false")


@pytest.fixture(scope="module")
def operator(cp):
    with running_operator(cp) as runner:
        yield runner


def job_file(tmp_path: Path, obj: dict) -> Path:
    path = tmp_path / f"{obj['metadata']['name']}.yaml"
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    return path


def job(name: str, namespace: str, behaviour, **spec) -> dict:
    return behaviour.on(ftj(name, namespace, gpus=1, node=NODE, **spec))


def test_submit_watch_exits_0_when_the_job_succeeds(cp, operator, namespace, tmp_path):
    path = job_file(tmp_path, job("ok", namespace, finishes()))
    res = finetune(cp, "submit", str(path), "--watch", "--timeout", "120")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"FineTuneJob {namespace}/ok created (context test, https://127.0.0.1:" in res.stdout
    assert "Created=True ChildrenCreated" in res.stdout  # the conditions' reasons, as they change
    assert "Succeeded: training finished" in res.stdout
    assert get_ftj(cp, "ok", namespace)["status"]["phase"] == "Succeeded"


def test_submit_watch_exits_1_with_the_trainers_reason_when_the_job_fails(cp, operator, namespace, tmp_path):
    doc = {"outcome": "Failed", "reason": "DataError", "message": "/opt/data/train.jsonl:3: no messages key"}
    path = job_file(tmp_path, job("bad", namespace, fails(exit_code=2, message=json.dumps(doc))))
    res = finetune(cp, "submit", str(path), "--watch", "--timeout", "120")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Failed: DataError: /opt/data/train.jsonl:3: no messages key" in res.stderr


def test_watch_shows_progress_and_the_result_as_plain_lines(cp, operator, namespace, tmp_path):
    path = job_file(tmp_path, job("prog", namespace, runs_long()))
    watcher = Running(cp, "submit", str(path), "--watch", "--timeout", "150")
    try:
        watcher.wait_for_line("Running=True PodsRunning")
        # what the operator writes from rank 0's metrics (kwok's pods serve none)
        progress = {"step": 5, "totalSteps": 10, "percent": "50%", "loss": 0.5, "tokensPerSecond": 1234.0,
                    "etaSeconds": 30}
        res = cp.kubectl("patch", "ftj", "prog", "-n", namespace, "--subresource=status", "--type=merge",
                         "-p", json.dumps({"status": {"progress": progress}}))
        assert res.returncode == 0, res.stderr
        line = watcher.wait_for_line("step 5/10")
        assert line.startswith("Running  [############............] 50%"), line
        assert "loss 0.5000" in line and "1234 tok/s" in line and "ETA 30s" in line
        assert "\r" not in watcher.output and "\x1b" not in watcher.output  # not a terminal: plain lines
        pod = children(cp, namespace, "prog")["pods"][0]
        result = {"outcome": "Succeeded", "steps": 10, "finalLoss": 0.25, "outputPath": "/tmp/out",
                  "manifestSha256": "b" * 64}
        kubelet_reports(cp, namespace, pod, exit_code=0, reason="Completed", message=json.dumps(result))
        assert watcher.wait(timeout=120) == 0, watcher.output
    finally:
        watcher.stop()
    assert f"output: /tmp/out  (manifest sha256 {'b' * 64})" in watcher.output


def test_a_cancelled_job_ends_the_watch_with_143_and_resume_runs_it_again(cp, operator, namespace, tmp_path):
    path = job_file(tmp_path, job("stop", namespace, runs_long()))
    watcher = Running(cp, "submit", str(path), "--watch", "--timeout", "150")
    try:
        watcher.wait_for_line("Running=True PodsRunning")
        res = finetune(cp, "cancel", "stop", "-n", namespace)
        assert res.returncode == 0, res.stderr
        assert "suspended: its pods stop after saving a checkpoint; `finetune resume stop` continues" in res.stdout
        assert watcher.wait(timeout=90) == 143, watcher.output
    finally:
        watcher.stop()
    assert "Suspended: spec.suspend is true" in watcher.output
    assert "already suspended" in finetune(cp, "cancel", "stop", "-n", namespace).stdout
    res = finetune(cp, "resume", "stop", "-n", namespace)
    assert res.returncode == 0 and "resumed" in res.stdout, res.stderr
    wait_phase(cp, "stop", namespace, "Running")


def test_resubmitting_a_changed_spec_is_refused_by_the_api_server_naming_the_field(cp, operator, namespace, tmp_path):
    obj = job("edit", namespace, runs_long())
    path = job_file(tmp_path, obj)
    assert finetune(cp, "submit", str(path)).returncode == 0
    res = finetune(cp, "submit", str(path))
    assert res.returncode == 0 and "exists with this spec: nothing to change" in res.stdout, res.stderr
    obj["spec"]["training"]["learningRate"] = 0.001
    path.write_text(yaml.safe_dump(obj))
    res = finetune(cp, "submit", str(path))
    assert res.returncode == 2, res.stdout
    assert f"error: the API server refused FineTuneJob {namespace}/edit:" in res.stderr
    assert "spec.training" in res.stderr and "immutable" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_where_a_job_goes_follows_kubeconfig_and_flags(cp, operator, namespace, tmp_path):
    obj = job("where", None, runs_long())
    obj["metadata"].pop("namespace")
    path = job_file(tmp_path, obj)
    res = finetune(cp, "submit", str(path), "--context", "nope")
    assert res.returncode == 2 and "--context nope: no such context in your kubeconfig (have: test)" in res.stderr
    res = finetune(cp, "submit", str(path), "--namespace", "no-such-ns")
    assert res.returncode == 2 and 'namespaces "no-such-ns" not found' in res.stderr, res.stderr
    res = finetune(cp, "submit", str(path), "-n", namespace)
    assert res.returncode == 0, res.stderr
    assert get_ftj(cp, "where", namespace) is not None
    obj["metadata"]["namespace"] = "other"
    path.write_text(yaml.safe_dump(obj))
    res = finetune(cp, "submit", str(path), "-n", namespace)
    assert res.returncode == 2 and "metadata.namespace is 'other' but --namespace is" in res.stderr
    res = finetune(cp, "status", "missing", "-n", namespace)
    assert res.returncode == 2
    assert f"FineTuneJob {namespace}/missing not found in context test" in res.stderr


def test_list_status_and_delete(cp, operator, namespace, tmp_path):
    for name in ("alpha", "beta"):
        assert finetune(cp, "submit", str(job_file(tmp_path, job(name, namespace, runs_long())))).returncode == 0
    wait_phase(cp, "alpha", namespace, "Running")
    wait_phase(cp, "beta", namespace, "Running")
    res = finetune(cp, "list", "-n", namespace)
    assert res.returncode == 0, res.stderr
    head, *rows = res.stdout.splitlines()
    assert head.split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "MODEL", "METHOD", "GPUS", "AGE"]
    assert [r.split()[:2] + r.split()[2:5] for r in rows] == [
        ["alpha", "Running", "/opt/models/tiny", "lora", "1x1"], ["beta", "Running", "/opt/models/tiny", "lora", "1x1"]]
    assert f"{namespace}   alpha" in finetune(cp, "list", "-A").stdout

    res = finetune(cp, "status", "alpha", "-n", namespace)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "Phase:      Running" in out and "Model:      /opt/models/tiny   method lora   GPUs 1x1" in out
    assert "Conditions:" in out and "PodsRunning" in out
    assert "Pods:" in out and "alpha-0-" in out and NODE in out
    st = json.loads(finetune(cp, "status", "alpha", "-n", namespace, "-o", "json").stdout)
    assert st["phase"] == "Running"

    res = finetune(cp, "cancel", "beta", "--delete", "-n", namespace)
    assert res.returncode == 0 and f"FineTuneJob {namespace}/beta deleted" in res.stdout, res.stderr
    wait_for(lambda: get_ftj(cp, "beta", namespace) is None, 60, "beta deleted")
    wait_for(lambda: not any(children(cp, namespace, "beta").values()), 90, "beta's children deleted")


def test_logs_says_which_ranks_exist_and_why_a_pod_has_no_log_yet(cp, operator, namespace, tmp_path):
    obj = ftj("wait", namespace, gpus=1, node="no-such-node")
    assert finetune(cp, "submit", str(job_file(tmp_path, obj))).returncode == 0
    res = finetune(cp, "logs", "wait", "--rank", "3", "-n", namespace)
    assert res.returncode == 2 and "--rank 3: FineTuneJob wait has 1 node(s), ranks 0-0" in res.stderr

    def unscheduled():
        pods = children(cp, namespace, "wait")["pods"]
        return pods and any(c.get("reason") == "Unschedulable" for c in pods[0]["status"].get("conditions") or [])

    wait_for(unscheduled, 60, "the pod of wait to be unschedulable")
    res = finetune(cp, "logs", "wait", "-n", namespace)
    assert res.returncode == 2, res.stdout
    assert "has not started: not scheduled: 0/" in res.stderr and "finetune logs wait -f waits for it" in res.stderr
    res = finetune(cp, "logs", "wait", "-n", namespace, "-f", "--wait", "2s")
    assert res.returncode == 2 and "did not start within 2s" in res.stderr, res.stderr


def test_on_a_terminal_watch_redraws_one_progress_line(cp, operator, namespace, tmp_path):
    import os
    import pty
    import subprocess
    import sys

    from cli_process import cli_env

    path = job_file(tmp_path, job("tty", namespace, finishes()))
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "submit", str(path), "--watch",
                             "--timeout", "120"], stdout=slave, stderr=slave, env=cli_env(cp))
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: the CLI has exited
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(timeout=60) == 0, out.decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    text = out.decode(errors="replace")
    assert "\r\x1b[2K" in text  # the progress line is redrawn in place
    assert "Created=True ChildrenCreated" in text and "Succeeded: training finished" in text
