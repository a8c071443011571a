"""progress: status.progress from the trainer's real rank-0 metrics endpoint (trainer/finetune_trainer/metrics.py)."""

from __future__ import annotations

import socket

import pytest

from finetune_operator.progress import fetch_progress, metrics_url, progress_from_metrics
from finetune_trainer.metrics import TrainerMetrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_reads_progress_from_the_trainers_endpoint():
    m = TrainerMetrics("team-a", "demo", rank=0)
    m.set(step=40, total_steps=160, train_loss=1.25, eval_loss=1.5, eta_seconds=90, tokens_per_second=1000)
    port = _free_port()
    m.serve(port)
    p = fetch_progress(f"http://127.0.0.1:{port}/metrics", timeout=2)
    assert p is not None
    assert (p.step, p.total_steps, p.percent, p.loss, p.eval_loss, p.eta_seconds) == (40, 160, "25%", 1.25, 1.5, 90)
    assert p.eta == "1m30s"  # the ETA column of kubectl get ftj


def test_unreachable_endpoint_means_no_progress():
    assert fetch_progress(f"http://127.0.0.1:{_free_port()}/metrics", timeout=0.5) is None


def test_other_ranks_and_missing_step_are_ignored():
    text = ('finetune_step{namespace="a",job_name="j",rank="1"} 9\n'
            'finetune_train_loss{namespace="a",job_name="j",rank="1"} 3\n')
    assert progress_from_metrics(text) is None
    text += 'finetune_step{namespace="a",job_name="j",rank="0"} 5\n'
    p = progress_from_metrics(text)
    assert p.step == 5 and p.loss is None and p.percent is None


def test_metrics_url_only_for_running_pods_with_an_ip():
    assert metrics_url({"status": {"phase": "Pending"}}, 8000) is None
    assert metrics_url({"status": {"phase": "Running", "podIP": "10.0.0.7"}}, 8000) == "http://10.0.0.7:8000/metrics"
    assert metrics_url({"status": {"phase": "Running", "podIP": "fd00::7"}}, 8000) == "http://[fd00::7]:8000/metrics"


@pytest.mark.parametrize("seconds,text", [(0, "0s"), (41.2, "42s"), (60, "1m00s"), (185, "3m05s"), (3720, "1h02m"),
                                          (90061, "25h01m")])
def test_eta_reads_like_a_duration(seconds, text):
    from finetune_api.status import format_eta

    assert format_eta(seconds) == text
