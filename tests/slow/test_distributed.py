"""Two CPU processes under torchrun (gloo): DDP and FSDP2 give one process's loss curve at the same global batch.

`FINETUNE_CPU_PROCESSES=2` makes `finetune run` start two processes; everything else is the real CLI. Under FSDP2
the model is built on the meta device and each rank loads only its shards (sharded_load.py); its checkpoints are
DCP folders every rank writes its share of, and a sharded run resumes to the same curve.
"""

import os
import shutil

import pytest

from support.cli_runs import finetune, history, manifest, write_job


def curve(out) -> list[float]:
    return [r["loss"] for r in history(out) if "loss" in r]


def run_job(tmp, model, processes: int, **changes):
    tmp.mkdir(parents=True, exist_ok=True)
    job = write_job(tmp, model, **{"training.maxSteps": 4, "training.evalEverySteps": None,
                                   "training.microBatchSize": 4, "training.globalBatchSize": 8,
                                   "output.saveEverySteps": 2} | changes)
    env = {"FINETUNE_CPU_PROCESSES": str(processes), "OMP_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        r = finetune("run", str(job))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return tmp / "out", r


@pytest.fixture(scope="module")
def single_full(tiny_model_dir, tmp_path_factory):
    return run_job(tmp_path_factory.mktemp("one"), tiny_model_dir, 1, **{"method.type": "full", "method.lora": None})[0]


def test_fsdp2_two_processes_match_one_process_and_resume(single_full, tiny_model_dir, tmp_path):
    out, r = run_job(tmp_path, tiny_model_dir, 2, **{"method.type": "full", "method.lora": None,
                                                     "distributed": {"strategy": "fsdp"}})
    assert "2 CPU processes, strategy fsdp" in r.stdout and "loaded into 2 shard(s)" in r.stdout
    assert curve(out) == pytest.approx(curve(single_full), rel=1e-4)
    assert manifest(out)["launch"]["strategy"] == "fsdp"
    # the saved model is the whole model, gathered from the shards
    from safetensors.torch import load_file

    ours, theirs = load_file(out / "model.safetensors"), load_file(single_full / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all((ours[k] - theirs[k]).abs().max() < 1e-4 for k in ours)
    # drop the last checkpoint and the output: the run resumes from step 2 under FSDP2 and ends the same
    first = curve(out)
    shutil.rmtree(out / "checkpoints" / "step-00000004")
    (out / "manifest.json").unlink()
    out2, r2 = run_job(tmp_path, tiny_model_dir, 2, **{"method.type": "full", "method.lora": None,
                                                       "distributed": {"strategy": "fsdp"}})
    assert "resuming from checkpoint step-00000002" in r2.stdout
    assert curve(out2) == pytest.approx(first, rel=1e-4)


def test_ddp_lora_two_processes_match_one_process(tiny_model_dir, tmp_path):
    lora = {"method.lora": {"rank": 4, "alpha": 8, "dropout": 0.0}}
    one, _ = run_job(tmp_path / "one", tiny_model_dir, 1, **lora)
    two, r = run_job(tmp_path / "two", tiny_model_dir, 2, **lora, **{"distributed": {"strategy": "ddp"}})
    assert "2 CPU processes, strategy ddp" in r.stdout
    assert curve(two) == pytest.approx(curve(one), rel=1e-4)


def test_fsdp2_lora_loaded_in_shards_matches_one_process(tiny_model_dir, tmp_path):
    lora = {"method.lora": {"rank": 4, "alpha": 8, "dropout": 0.0}}
    one, _ = run_job(tmp_path / "one", tiny_model_dir, 1, **lora)
    two, r = run_job(tmp_path / "two", tiny_model_dir, 2, **lora, **{"distributed": {"strategy": "fsdp"}})
    assert "loaded into 2 shard(s)" in r.stdout  # no rank held the whole base model
    assert curve(two) == pytest.approx(curve(one), rel=1e-4)
    from safetensors.torch import load_file

    a, b = load_file(one / "adapter_model.safetensors"), load_file(two / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-4 for k in a)
