"""The issue's bad input, each refused before any weight loads with an error naming the field."""

import json

import pytest

from finetune_api import SpecError, load_job_text
from finetune_trainer.errors import EnvironmentProblem, TrainerInputError
from finetune_trainer.local_run import check_merge_fits, describe, plan_local

JOB = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t}
spec:
  model: {path: model}
  dataset: {paths: [d.jsonl], format: messages}
  output: {path: out}
"""


def job(extra: str = "", text: str = JOB):
    return load_job_text(text + extra)


def test_qlora_on_cpu(tmp_path):
    with pytest.raises(EnvironmentProblem, match="spec.method.type qlora needs a CUDA GPU"):
        plan_local(job("  method: {type: qlora}\n"), tmp_path / "j.yaml", gpus_visible=0)


def test_deepspeed_on_cpu_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CPU_PROCESSES", "2")
    with pytest.raises(EnvironmentProblem, match="spec.distributed.strategy deepspeed-zero2 needs CUDA GPUs"):
        plan_local(job("  distributed: {strategy: deepspeed-zero2}\n"), tmp_path / "j.yaml", gpus_visible=0)


def test_dpo_on_sft_format_data():
    with pytest.raises(SpecError, match="spec.objective.*preference"):
        job("  objective: {type: dpo}\n")


def test_spectrum_fraction_out_of_range():
    with pytest.raises(SpecError, match="spec.method.spectrum.fraction"):
        job("  method: {type: spectrum, spectrum: {fraction: 0}}\n")


def test_target_modules_matching_nothing_named_before_weights_load(tiny_model_dir, tmp_path):
    from finetune_trainer.modeling import check_targets, meta_model

    j = job("  method: {type: lora, lora: {targetModules: [q_proj, qkv_proj]}}\n",
            JOB.replace("path: model", f"path: {tiny_model_dir}"))
    cfg = plan_local(j, tmp_path / "j.yaml", gpus_visible=0)
    model = meta_model(cfg)
    assert all(p.device.type == "meta" for p in model.parameters())  # nothing was loaded
    with pytest.raises(TrainerInputError, match=r"spec.method.lora.targetModules: \['qkv_proj'\] match no linear "
                                                r"layer of the model; its linear layers are: .*'q_proj'"):
        check_targets(model, cfg)


def _model_dir(tmp_path, layers=32, hidden=4096):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "vocab_size": 128256, "hidden_size": hidden, "intermediate_size": 14336, "num_hidden_layers": layers,
        "num_attention_heads": 32, "num_key_value_heads": 8}))
    return d


def test_zero3_with_merge_refused_when_the_host_cannot_hold_the_merged_model(tmp_path):
    _model_dir(tmp_path)
    cfg = plan_local(job("  method: {type: lora}\n  distributed: {strategy: deepspeed-zero3}\n"
                         "  output: {path: out, mergeAdapter: true}\n",
                         JOB.replace("  output: {path: out}\n", "")), tmp_path / "j.yaml", gpus_visible=2)
    with pytest.raises(EnvironmentProblem, match=r"spec.output.mergeAdapter: merging this 8.0B-parameter model after "
                                                 r"a deepspeed-zero3 run .* ~18 GiB of host memory; this node has 8 GiB"):
        check_merge_fits(cfg, host_bytes=8 * 1024 ** 3)
    check_merge_fits(cfg, host_bytes=64 * 1024 ** 3)  # a big enough host is fine


def test_cpu_processes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CPU_PROCESSES", "2")
    cfg = plan_local(job("  method: {type: full}\n"), tmp_path / "j.yaml", gpus_visible=0)
    assert (cfg.device, cfg.nproc_per_node, cfg.strategy) == ("cpu", 2, "fsdp")
    assert "no GPU visible: 2 CPU processes" in describe(cfg)
    monkeypatch.setenv("FINETUNE_CPU_PROCESSES", "two")
    with pytest.raises(EnvironmentProblem, match="FINETUNE_CPU_PROCESSES='two'"):
        plan_local(job(), tmp_path / "j.yaml", gpus_visible=0)
