"""Preemption and resume: SIGTERM mid-run saves a checkpoint; running again continues to the same losses."""

import os
import signal
import subprocess
import sys
import time

from support.cli_runs import finetune, history, manifest, write_job

STEPS = 40


def test_sigterm_then_resume_matches_the_uninterrupted_run(quickstart_model, tmp_path):
    changes = {"training.maxSteps": STEPS, "training.evalEverySteps": None, "training.logEverySteps": 1,
               "output.saveEverySteps": 10, "method.lora.dropout": 0.1}
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    job_a = write_job(a_dir, quickstart_model, **changes)
    job_b = write_job(b_dir, quickstart_model, **changes)
    assert finetune("run", str(job_a)).returncode == 0

    # run B, and preempt it (SIGTERM to the whole process group, as the kubelet does) once it is past step 12
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(job_b)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, OMP_NUM_THREADS="2"))
    seen = []
    deadline = time.monotonic() + 600
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 12/"):
            os.killpg(proc.pid, signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(seen)
    rest = proc.stdout.read()
    proc.wait(timeout=300)
    assert proc.returncode != 0, "a preempted run must not report success"
    assert "SIGTERM: saved checkpoint at step" in rest, "".join(seen) + rest
    out_b = b_dir / "out"
    assert not (out_b / "manifest.json").exists(), "no manifest before the run completes"
    stopped_at = max(r["step"] for r in history(out_b))
    assert 12 <= stopped_at < STEPS

    r = finetune("run", str(job_b))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert f"resuming from checkpoint step-{stopped_at:08d}" in r.stdout
    la = {x["step"]: x["loss"] for x in history(a_dir / "out") if "loss" in x}
    lb = {x["step"]: x["loss"] for x in history(out_b) if "loss" in x}
    assert sorted(lb) == list(range(1, STEPS + 1)), "history must hold each step once"
    for step in range(1, STEPS + 1):
        assert abs(la[step] - lb[step]) <= 1e-4 * max(1.0, abs(la[step])), (step, la[step], lb[step])
    assert abs(manifest(a_dir / "out")["metrics"]["final_loss"] - manifest(out_b)["metrics"]["final_loss"]) < 1e-4
