"""The disk a run writes: each checkpoint, the final output, the peak — and what the operator does with it."""

from __future__ import annotations

from finetune_api import load_job_text
from finetune_plan import Machine, plan_launch
from finetune_plan.catalog import shape_for_hub_id
from finetune_plan.disk import disk_plan
from finetune_plan.memory import GiB

JOB = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: w}
spec:
  model: {hubId: meta-llama/Llama-3.1-8B}
  dataset: {paths: [/d.jsonl], format: messages}
  method: {type: %s}
  training: {maxSteps: 1000}
  distributed: {strategy: %s}
  output: {path: /out, saveEverySteps: 100, keepLastCheckpoints: 2}
"""
L8B = shape_for_hub_id("meta-llama/Llama-3.1-8B")


def job(method="full", strategy="fsdp"):
    return load_job_text(JOB % (method, strategy))


def test_an_8b_full_fine_tune_checkpoint_is_fp32_weights_and_adamw_state_and_its_output_bf16():
    d = disk_plan(L8B, job(), world=2, strategy="fsdp")
    assert 89 < d.checkpoint_bytes / GiB < 91  # the W4 run's measured 90 GiB end-of-run checkpoint
    assert d.checkpoint_bytes_per_rank == -(-d.checkpoint_bytes // 2)  # FSDP: every rank writes its half
    assert 14.5 < d.output_bytes / GiB < 15.5  # 8.03e9 bf16 weights (+ small files), not the fp32 master copy
    assert d.peak_bytes == 3 * d.checkpoint_bytes  # keep 2 + the one being written


def test_adapters_are_small_and_replicated_strategies_write_everything_on_rank_zero():
    d = disk_plan(L8B, job("lora", "ddp"), world=2, strategy="ddp")
    assert d.checkpoint_bytes < GiB and d.checkpoint_bytes_per_rank == d.checkpoint_bytes
    assert d.output_bytes < GiB


def test_deepspeed_adds_its_bf16_copy():
    assert "weights_bf16" in disk_plan(L8B, job(strategy="deepspeed-zero3"), 2, "deepspeed-zero3").checkpoint_parts


def test_the_operator_plans_disk_for_well_known_hub_models_only():
    from finetune_operator.pod_config import build_trainer_config, planned_volume_size, volume_shortfall

    j = job().model_copy(deep=True)
    j.metadata.namespace = "ns"
    cfg = build_trainer_config(j)
    size = planned_volume_size(cfg)
    assert size.endswith("Gi") and int(size[:-2]) >= 1.25 * cfg.plan.disk.peak_bytes / GiB
    assert volume_shortfall("128Gi", cfg).startswith("the output volume (128Gi) is smaller than this run needs")
    assert volume_shortfall("2Ti", cfg) is None
    j.spec.model = j.spec.model.model_copy(update={"hub_id": "someone/unknown-model"})
    assert build_trainer_config(j).plan.disk is None


def test_an_output_volume_without_a_size_is_sized_from_the_plan_or_refused_by_name():
    import pytest

    from finetune_operator.render import RenderError, build_output_pvc

    doc = (JOB % ("full", "fsdp")).replace("output: {path: /out,", "output: {path: out, volume: {create: {}},")
    pvc = build_output_pvc(load_job_text(doc.replace("metadata: {name: w}", "metadata: {name: w, namespace: n}")),
                           uid="u")
    assert pvc["spec"]["resources"]["requests"]["storage"].endswith("Gi")
    unknown = doc.replace("meta-llama/Llama-3.1-8B", "someone/unknown").replace("{name: w}", "{name: w, namespace: n}")
    with pytest.raises(RenderError, match="spec.output.volume.create.size: the operator cannot plan the disk"):
        build_output_pvc(load_job_text(unknown), uid="u")


def test_finetune_plan_prints_the_disk(tmp_path, capsys):
    import json

    from finetune_cli.main import main

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({
        "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
        "num_attention_heads": 32, "num_key_value_heads": 8}))
    (tmp_path / "job.yaml").write_text((JOB % ("full", "fsdp")).replace("hubId: meta-llama/Llama-3.1-8B", "path: m"))
    assert main(["plan", str(tmp_path / "job.yaml"), "--gpu-memory", "141GiB", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "disk:          each checkpoint 89." in out and "final output 15." in out and "peak 26" in out, out


def test_a_plan_with_a_shape_carries_its_disk():
    p = plan_launch(job(), Machine(device="cuda", nproc_per_node=2, gpu_bytes=141 * GiB), L8B)
    assert p.disk is not None and p.disk.checkpoint_bytes_per_rank < p.disk.checkpoint_bytes
