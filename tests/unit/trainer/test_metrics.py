"""metrics: what Prometheus scrapes from a trainer, read back over HTTP with Prometheus' own text parser."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from finetune_trainer.metrics import TrainerMetrics, node_rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(m: TrainerMetrics) -> dict[tuple[str, tuple], float]:
    port = _free_port()
    m.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _job(rank: str = "0", ns: str = "team-a") -> tuple:
    return (("job_name", "demo"), ("namespace", ns), ("rank", rank))


def test_rank0_serves_progress_with_job_labels_and_conventional_names():
    m = TrainerMetrics("team-a", "demo", rank=0)
    m.set(total_steps=100, step=0, start_time_seconds=1.7e9, checkpoint_interval_steps=50)
    m.set(step=7, train_loss=1.25, learning_rate=2e-4, tokens_per_second=900.0, eta_seconds=30)
    m.tokens.inc(4096)
    m.checkpoints.inc()
    got = _scrape(m)
    assert got[("finetune_step", _job())] == 7
    assert got[("finetune_train_loss", _job())] == 1.25
    assert got[("finetune_tokens_processed_total", _job())] == 4096
    assert got[("finetune_checkpoints_saved_total", _job())] == 1
    assert got[("finetune_eta_seconds", _job())] == 30
    names = {n for n, _ in got}
    assert all(n.startswith("finetune_") for n in names)
    # units in names; counters end in _total (prometheus-client adds the _created companions)
    assert {"finetune_eta_seconds", "finetune_start_time_seconds", "finetune_checkpoint_interval_steps"} <= names


def test_a_gauge_appears_with_its_first_value():
    m = TrainerMetrics("", "demo", rank=0)
    m.set(step=0)
    got = _scrape(m)
    assert got[("finetune_step", _job(ns="local"))] == 0  # `finetune run`: no namespace, reported as "local"
    # no eval loss of 0 before the first evaluation, no MFU on a CPU run, no GPU memory without a GPU
    assert not {n for n, _ in got} & {"finetune_eval_loss", "finetune_mfu_ratio", "finetune_gpu_memory_allocated_bytes"}


def test_the_start_step_counts_as_the_newest_checkpoint_until_one_is_saved():
    m = TrainerMetrics("team-a", "demo", rank=0)
    m.set(step=300)  # a resumed run starts at its checkpoint
    m.set(step=340)
    got = _scrape(m)
    assert got[("finetune_last_checkpoint_step", _job())] == 300
    m.set(last_checkpoint_step=350)
    assert _scrape(m)[("finetune_last_checkpoint_step", _job())] == 350
    assert _scrape(m)[("finetune_last_checkpoint_timestamp_seconds", _job())] > 1.7e9


def test_other_ranks_serve_no_training_series():
    m = TrainerMetrics("team-a", "demo", rank=3)
    m.set(step=7, train_loss=1.0)
    m.tokens.inc(10)
    assert not [n for n, _ in _scrape(m) if not n.startswith("finetune_gpu_memory_")]


def test_unknown_gauge_name_is_an_error():
    with pytest.raises(KeyError):
        TrainerMetrics("a", "b", rank=0).set(stepp=1)


def test_node_rows_keep_this_nodes_ranks():
    rows = [(0, 0, 1.0, 2.0), (1, 0, 3.0, 4.0), (2, 1, 5.0, 6.0), (3, 1, 7.0, 8.0)]
    assert node_rows(rows, 1) == [(2, 5.0, 6.0), (3, 7.0, 8.0)]
    assert node_rows(rows, 0) == [(0, 1.0, 2.0), (1, 3.0, 4.0)]


def test_gpu_memory_is_gathered_in_a_process_group(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        m = TrainerMetrics("team-a", "demo", rank=0, node_rank=0)
        m.record_gpu_memory(allocated=1024.0, reserved=4096.0)
    finally:
        dist.destroy_process_group()
    got = _scrape(m)
    assert got[("finetune_gpu_memory_allocated_bytes", _job())] == 1024
    assert got[("finetune_gpu_memory_reserved_bytes", _job())] == 4096
