"""`finetune run`'s launch plan: devices, processes, strategy, paths — and what it refuses before loading."""


import json

import pytest

from finetune_api import load_job_text
from finetune_trainer.errors import EnvironmentProblem
from finetune_plan import resolve_strategy
from finetune_trainer.local_run import describe, plan_local

JOB = """
apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t}
spec:
  model: {path: model}
  dataset: {paths: [data/train.jsonl], validationPaths: [/abs/val.jsonl], format: alpaca}
  output: {path: ../out}
"""


LLAMA_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False}


def job(extra: str = ""):
    return load_job_text(JOB + extra)


def test_cpu_when_no_gpu_and_says_so(tmp_path):
    cfg = plan_local(job(), tmp_path / "jobs" / "job.yaml", gpus_visible=0)
    assert (cfg.device, cfg.nproc_per_node, cfg.strategy) == ("cpu", 1, "single")
    assert "no GPU visible: 1 CPU process" in describe(cfg)


def test_relative_paths_resolve_against_the_spec_file(tmp_path):
    cfg = plan_local(job(), tmp_path / "jobs" / "job.yaml", gpus_visible=0)
    assert cfg.model_path == str(tmp_path / "jobs" / "model")
    assert cfg.dataset_paths == [str(tmp_path / "jobs" / "data" / "train.jsonl")]
    assert cfg.validation_paths == ["/abs/val.jsonl"]
    assert cfg.output_dir == str(tmp_path / "out")


def test_one_process_per_visible_gpu_and_the_memory_plan_picks_ddp_for_lora(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(LLAMA_8B))
    cfg = plan_local(job(), tmp_path / "job.yaml", gpus_visible=2, gpu_bytes=141 * 2 ** 30)
    assert (cfg.device, cfg.nproc_per_node, cfg.strategy) == ("cuda", 2, "ddp")
    assert cfg.plan.complete and cfg.plan.memory_gib["total"] < 141


def test_without_the_models_config_the_gpu_plan_is_left_to_the_launcher(tmp_path):
    cfg = plan_local(job(), tmp_path / "job.yaml", gpus_visible=2)
    assert (cfg.device, cfg.nproc_per_node, cfg.plan.strategy) == ("cuda", 2, None)
    assert not cfg.plan.complete and "decided by the memory plan" in describe(cfg)


def test_more_gpus_asked_than_present_is_refused(tmp_path):
    with pytest.raises(EnvironmentProblem, match="gpusPerNode is 4 but this machine shows 1 GPU"):
        plan_local(job("  distributed: {gpusPerNode: 4}\n"), tmp_path / "job.yaml", gpus_visible=1)


def test_qlora_without_gpu_is_refused_before_loading(tmp_path):
    with pytest.raises(EnvironmentProblem, match="qlora needs a CUDA GPU"):
        plan_local(job("  method: {type: qlora}\n"), tmp_path / "job.yaml", gpus_visible=0)


def test_multi_node_is_for_clusters(tmp_path):
    with pytest.raises(EnvironmentProblem, match="nodes is 2"):
        plan_local(job("  distributed: {nodes: 2}\n"), tmp_path / "job.yaml", gpus_visible=0)


def test_deepspeed_on_a_cpu_is_refused_by_field(tmp_path):
    with pytest.raises(EnvironmentProblem, match="spec.distributed.strategy deepspeed-zero2 needs CUDA GPUs"):
        plan_local(job("  distributed: {strategy: deepspeed-zero2}\n"), tmp_path / "job.yaml", gpus_visible=0)


@pytest.mark.parametrize("extra", [
    "  method: {type: spectrum}\n", "  distributed: {strategy: fsdp}\n", "  method: {type: full}\n",
])
def test_every_method_and_fsdp_plan_on_gpus(tmp_path, extra):
    cfg = plan_local(job(extra), tmp_path / "job.yaml", gpus_visible=2)
    assert cfg.nproc_per_node == 2


def test_dpo_and_orpo_plan(tmp_path):
    for objective in ("dpo", "orpo"):
        j = load_job_text(JOB.replace("format: alpaca", "format: preference") + f"  objective: {{type: {objective}}}\n")
        assert plan_local(j, tmp_path / "job.yaml", gpus_visible=0).device == "cpu"


def test_strategy_resolution():
    assert resolve_strategy("auto", False, 1) == "single"
    assert resolve_strategy("ddp", False, 1) == "single"
    assert resolve_strategy("deepspeed-zero3", True, 1) == "deepspeed-zero3"  # ZeRO-Offload on one GPU
    assert resolve_strategy("fsdp", True, 1) == "fsdp"
    assert resolve_strategy("auto", False, 2) == "ddp"
    assert resolve_strategy("auto", True, 2) == "fsdp"
    # full/Spectrum on GPUs: FSDP2's bf16 compute copies even on one GPU; on the CPU nothing to shard
    assert resolve_strategy("auto", True, 1, "cuda") == "fsdp"
    assert resolve_strategy("auto", True, 1, "cpu") == "single"
    assert resolve_strategy("auto", True, 2, "cpu") == "fsdp"
    assert resolve_strategy("deepspeed-zero3", True, 8) == "deepspeed-zero3"
