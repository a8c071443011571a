"""The fault suite: a fault injected on one rank, in one phase, ends the whole run promptly and loses nothing.

Every run is the real `finetune run` (launcher, 2 CPU worker processes, gloo collectives) on the quickstart's
tiny model. Faults come through the trainer's test-only hook `FINETUNE_FAULT=<phase>:<rank>[:<step>]`
(trainer/finetune_trainer/faults.py); kills are real signals. docs/faults.md tabulates what each row shows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cli_runs import finetune, history, manifest, write_job

TWO = {"FINETUNE_CPU_PROCESSES": "2"}
SHORT = {"training.maxSteps": 6, "training.evalEverySteps": None, "training.logEverySteps": 1,
         "training.globalBatchSize": 8, "training.microBatchSize": 4, "output.saveEverySteps": 2,
         "output.keepLastCheckpoints": 3, "distributed.strategy": "fsdp"}
QUIET = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # lines as they happen: tests act on them
PROMPT_EXIT_SECONDS = 20  # from the failing rank's report to the last process gone (a hang would be 30 min)


def run_timed(job: Path, env: dict, marker: str, timeout: float = 600) -> tuple[int, str, float]:
    """Run `finetune run`, returning (rc, all output, seconds from the line containing `marker` to exit)."""
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, **QUIET, **env))
    seen, marked = [], None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if marked is None and marker in line:
            marked = time.monotonic()
        assert time.monotonic() < deadline, "".join(seen)
    proc.wait(timeout=60)
    return proc.returncode, "".join(seen), time.monotonic() - (marked or time.monotonic())


def leftover_workers(job: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "finetune_trainer.worker" in ln and str(job.parent) in ln]


def checkpoints(out: Path) -> list[str]:
    d = out / "checkpoints"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


@pytest.mark.parametrize("phase,rank,step", [("data", 1, None), ("step", 1, 3), ("checkpoint", 0, 4),
                                             ("output", 0, None), ("output", 1, None)])
def test_one_rank_failing_in_any_phase_ends_every_process_promptly_with_its_reason(quickstart_model, tmp_path,
                                                                                   phase, rank, step):
    job = write_job(tmp_path, quickstart_model, **SHORT)
    fault = f"{phase}:{rank}" + (f":{step}" if step else "")
    rc, text, after = run_timed(job, TWO | {"FINETUNE_FAULT": fault}, f"rank {rank}: unexpected error")
    assert rc == 1, text
    errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: rank {rank}: unexpected InjectedFault: injected fault: {phase} on rank {rank}"
                      + (f" at step {step}" if step else "") + " (a bug: the traceback is above)"], text
    assert after < PROMPT_EXIT_SECONDS, f"{after:.1f}s from the failure to the end"
    assert not leftover_workers(job)
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    assert not list(out.glob(".*.tmp")) and not list((out / "checkpoints").glob(".*.tmp")), "partial writes left"
    if phase in ("checkpoint", "output"):  # what was saved before the fault is intact and resumable
        assert "step-00000002" in checkpoints(out)
        r = finetune("run", str(job), env_extra=TWO)
        assert r.returncode == 0 and "resuming from checkpoint" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_sigkill_of_the_whole_run_then_resume_matches_an_uninterrupted_run(quickstart_model, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    changes = SHORT | {"training.maxSteps": 10}
    job_a, job_b = write_job(a, quickstart_model, **changes), write_job(b, quickstart_model, **changes)
    assert finetune("run", str(job_a), env_extra=TWO).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(job_b)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, **QUIET, **TWO))
    for line in proc.stdout:
        if line.startswith("step 5/"):
            os.killpg(proc.pid, signal.SIGKILL)  # no chance to save: the newest complete checkpoint is step 4
            break
    proc.wait(timeout=60)
    assert not leftover_workers(job_b)
    r = finetune("run", str(job_b), env_extra=TWO)
    assert r.returncode == 0 and "resuming from checkpoint step-00000004" in r.stdout, r.stdout[-3000:] + r.stderr
    la = {x["step"]: x["loss"] for x in history(a / "out") if "loss" in x}
    lb = {x["step"]: x["loss"] for x in history(b / "out") if "loss" in x}
    assert sorted(lb) == list(range(1, 11)), "each step logged once"
    assert all(abs(la[k] - lb[k]) <= 1e-4 * max(1.0, abs(la[k])) for k in la), (la, lb)


def test_killing_only_the_launcher_takes_its_workers_along(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"training.maxSteps": 200})
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **QUIET, **TWO))
    for line in proc.stdout:
        if line.startswith("step 2/"):
            proc.kill()  # the launcher alone, as an OOM killer would
            break
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while leftover_workers(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftover_workers(job), "workers outlived their launcher"


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one_and_says_so(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"distributed.strategy": "ddp"})
    assert finetune("run", str(job), env_extra=TWO).returncode == 0
    out = tmp_path / "out"
    newest = out / "checkpoints" / "step-00000006"
    weights = newest / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as a disk error or a killed copy leaves it
    job.write_text(job.read_text().replace("maxSteps: 6", "maxSteps: 8"))
    r = finetune("run", str(job), env_extra=TWO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    assert "checkpoint step-00000006 is damaged (trainable.safetensors has 1000 bytes" in r.stdout
    assert "resuming from checkpoint step-00000004" in r.stdout
    assert sorted(x["step"] for x in history(out) if "loss" in x) == list(range(1, 9))


def test_a_full_disk_during_a_save_stops_clearly_and_keeps_the_previous_checkpoint(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT)
    r = finetune("run", str(job), env_extra=TWO | {"FINETUNE_FAULT": "enospc:1:4"})
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr
    assert "checkpoint at step 4: the output volume filled up while writing" in r.stderr
    assert "previous checkpoint is intact" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "out"
    assert checkpoints(out) == ["step-00000002"]
    from finetune_trainer.checkpoint import verify

    assert verify(out / "checkpoints" / "step-00000002") is None


def test_a_nan_loss_stops_with_the_step_and_writes_no_nan_weights(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"distributed.strategy": "ddp"})
    r = finetune("run", str(job), env_extra=TWO | {"FINETUNE_FAULT": "nan:0:3"})
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr
    assert "error: step " in r.stderr and ("loss nan" in r.stderr or "gradient norm" in r.stderr), r.stderr
    assert "Lower spec.training.learningRate" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists() and not (out / "adapter_model.safetensors").exists()
    import torch
    from safetensors.torch import load_file

    from finetune_trainer.checkpoint import list_checkpoints, verify

    for path in list_checkpoints(out):
        assert verify(path) is None
        assert all(torch.isfinite(t).all() for t in load_file(path / "trainable.safetensors").values()), path
    rows = [x for x in history(out) if "loss" in x]
    assert all(torch.isfinite(torch.tensor(x["loss"])) for x in rows), "no NaN step was recorded as done"
    assert "error: step 3: loss nan" in r.stderr and [x["step"] for x in rows] == [1, 2]


def test_an_unwritable_output_path_is_refused_before_any_model_loads(quickstart_model, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    job = write_job(tmp_path, quickstart_model, **SHORT)
    job.write_text(job.read_text().replace(str(tmp_path / "out"), str(tmp_path / "a-file" / "out")))
    t = time.monotonic()
    r = finetune("run", str(job), env_extra=TWO)
    assert r.returncode == 2 and time.monotonic() - t < 60
    assert f"spec.output.path '{tmp_path / 'a-file' / 'out'}': '{tmp_path / 'a-file'}' is a file, not a folder" \
        in r.stderr, r.stderr
    assert "model:" not in r.stdout and "Traceback" not in r.stderr


def test_a_peer_that_stops_answering_fails_the_run_at_the_collective_timeout(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"distributed.timeoutSeconds": 10,
                                                           "distributed.strategy": "ddp"})
    rc, text, after = run_timed(job, TWO | {"FINETUNE_FAULT": "hang:1:3"}, "step 2/")
    assert rc == 3, text
    assert "a collective timed out (spec.distributed.timeoutSeconds)" in text, text
    assert after < 10 + 60, after
    assert not leftover_workers(job)


def test_rerunning_a_finished_job_is_a_no_op(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT)
    assert finetune("run", str(job), env_extra=TWO).returncode == 0
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    r = finetune("run", str(job), env_extra=TWO)
    assert r.returncode == 0 and "already complete" in r.stdout, r.stdout[-2000:] + r.stderr
    assert "done: 6 steps" in r.stdout
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before
    # a shorter maxSteps is complete too: nothing rewritten, no "(step 6 of 5)"
    job.write_text(job.read_text().replace("maxSteps: 6", "maxSteps: 5"))
    r = finetune("run", str(job), env_extra=TWO)
    assert r.returncode == 0 and (tmp_path / "out" / "manifest.json").read_bytes() == before, r.stderr


def test_resuming_under_a_different_spec_is_refused_naming_what_differs(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"training.maxSteps": 2})
    assert finetune("run", str(job), env_extra=TWO).returncode == 0
    job = write_job(tmp_path, quickstart_model, **SHORT | {"training.maxSteps": 4, "method.lora.rank": 4})
    r = finetune("run", str(job), env_extra=TWO)
    assert r.returncode == 2 and "spec.method.lora.rank: was 8, now 4" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_sigterm_saves_a_checkpoint_and_exits_as_a_preemption(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"training.maxSteps": 200})
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **QUIET, **TWO))
    seen = []
    for line in proc.stdout:  # progress lines go to stderr, merged here
        seen.append(line)
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGTERM)  # to the CLI alone, as a terminal's kill would
            break
    text = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, text
    assert "stopped: a checkpoint was saved" in text and "Traceback" not in text and "error:" not in text, text
    assert "SIGTERM: saved checkpoint at step" in text


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(quickstart_model, tmp_path):
    job = write_job(tmp_path, quickstart_model, **SHORT | {"training.maxSteps": 200})
    first = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(job)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=dict(os.environ, **QUIET, **TWO))
    try:
        for line in first.stdout:
            if line.startswith("step 1/"):
                break
        r = finetune("run", str(job), env_extra=TWO)
        assert r.returncode == 2 and "another run is writing there (pid" in r.stderr, r.stderr
    finally:
        first.kill()
        first.wait()
