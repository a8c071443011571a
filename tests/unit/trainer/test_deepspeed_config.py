"""The DeepSpeed config is generated from the spec: stages, offload, batch arithmetic, clipping, bf16."""

import pytest

from finetune_api import load_job_text
from finetune_api.trainer_config import LaunchPlan, TrainerConfig
from finetune_trainer.deepspeed_config import build_deepspeed_config, config_for

BASE = dict(micro=2, accumulation=4, world=2, learning_rate=1e-4, weight_decay=0.01, max_grad_norm=1.0)


def test_zero2_shards_optimizer_and_gradients_without_offload():
    c = build_deepspeed_config(stage=2, cpu_offload=False, **BASE)
    z = c["zero_optimization"]
    assert z["stage"] == 2 and "offload_optimizer" not in z and "offload_param" not in z
    assert (c["train_micro_batch_size_per_gpu"], c["gradient_accumulation_steps"], c["train_batch_size"]) == (2, 4, 16)
    assert c["bf16"] == {"enabled": True} and c["gradient_clipping"] == 1.0
    assert c["optimizer"]["params"]["lr"] == 1e-4 and c["optimizer"]["params"]["weight_decay"] == 0.01


def test_zero3_with_offload_offloads_optimizer_and_parameters_and_gathers_on_save():
    z = build_deepspeed_config(stage=3, cpu_offload=True, **BASE)["zero_optimization"]
    assert z["offload_optimizer"]["device"] == "cpu" and z["offload_param"]["device"] == "cpu"
    assert z["stage3_gather_16bit_weights_on_model_save"] is True


def test_zero2_offload_is_optimizer_only():
    z = build_deepspeed_config(stage=2, cpu_offload=True, **BASE)["zero_optimization"]
    assert "offload_optimizer" in z and "offload_param" not in z


def test_clipping_off_and_bad_stage():
    assert build_deepspeed_config(stage=2, cpu_offload=False, **(BASE | {"max_grad_norm": 0}))["gradient_clipping"] == 0
    with pytest.raises(ValueError, match="stage must be 2 or 3"):
        build_deepspeed_config(stage=1, cpu_offload=False, **BASE)


def test_from_a_job_spec():
    job = load_job_text("""apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t}
spec:
  model: {hubId: meta-llama/Llama-3.1-8B, dtype: float32}
  dataset: {paths: [d.jsonl], format: messages}
  method: {type: full}
  training: {learningRate: 3.0e-5, maxGradNorm: 0.5}
  distributed: {strategy: deepspeed-zero3, cpuOffload: true}
  output: {path: out}
""")
    cfg = TrainerConfig(job=job, output_dir="/o",
                        plan=LaunchPlan(nproc_per_node=2, device="cuda", strategy="deepspeed-zero3"))
    c = config_for(cfg, micro=1, accumulation=8, world=2)
    assert c["zero_optimization"]["stage"] == 3 and "offload_param" in c["zero_optimization"]
    assert c["optimizer"]["params"]["lr"] == 3e-5 and c["gradient_clipping"] == 0.5
    assert c["bf16"]["enabled"] is False and c["train_batch_size"] == 16
