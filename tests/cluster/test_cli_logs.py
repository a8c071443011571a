"""`finetune logs` end to end: the API server asks the node's kubelet (kwok's server, pod_logs.py) for the log of the
trainer container of the right pod, and the CLI prints it line by line."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml
from cli_process import Running, finetune
from conftest import cluster_bin_dir
from pod_behaviour import runs_long
from pod_logs import LogsControlPlane, cri_lines
from scenario import ftj, get_ftj, install_crd, running_operator, wait_phase

NODE = "gpu-logs"
LINES = ["launch: 1 GPU process(es), strategy single", "step 1/10 loss 2.3012", "step 2/10 loss 1.9876"]


@pytest.fixture(scope="module")
def lcp():
    workdir = Path(tempfile.mkdtemp(prefix="finetune-logs-"))
    cp = LogsControlPlane(cluster_bin_dir(), workdir)
    try:
        cp.start()
        cp.add_log_node(NODE)
        install_crd(cp)
        with running_operator(cp):
            yield cp
    finally:
        keep = os.environ.get("FINETUNE_KEEP_CLUSTER") == "1"
        cp.stop(remove=not keep)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def test_logs_prints_the_trainer_log_of_rank_0_and_follows_it_until_ctrl_c(lcp, tmp_path):
    ns = lcp.create_namespace(f"l-{uuid.uuid4().hex[:8]}")
    lcp.trainer_log.write_text(cri_lines(LINES))
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(runs_long().on(ftj("talk", ns, gpus=1, node=NODE))))
    assert finetune(lcp, "submit", str(path)).returncode == 0
    wait_phase(lcp, "talk", ns, "Running")

    res = finetune(lcp, "logs", "talk", "-n", ns)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == LINES
    res = finetune(lcp, "logs", "talk", "-n", ns, "--tail", "1")
    assert res.stdout.splitlines() == LINES[-1:], res.stderr

    follower = Running(lcp, "logs", "talk", "-n", ns, "-f")
    try:
        follower.wait_for_line(LINES[-1])
        with lcp.trainer_log.open("a") as f:  # the trainer writes on: -f shows it as it comes
            f.write(cri_lines(["step 3/10 loss 1.7001"]))
        follower.wait_for_line("step 3/10 loss 1.7001")
        follower.proc.send_signal(signal.SIGINT)  # Ctrl-C ends following, not the job
        assert follower.wait(timeout=30) == 130
    finally:
        follower.stop()
    assert "Traceback" not in follower.output and "interrupted" in follower.output
    assert get_ftj(lcp, "talk", ns)["status"]["phase"] == "Running"
