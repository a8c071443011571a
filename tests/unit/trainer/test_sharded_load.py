"""Loading into FSDP2 shards: the private torch helper it needs exists, and which runs take that path."""

from __future__ import annotations

import json

import torch

from finetune_api import load_job_text
from finetune_api.trainer_config import LaunchPlan, TrainerConfig
from finetune_trainer import sharded_load
from finetune_trainer.deepspeed_engine import check_version


def cfg(model_dir, method="lora", strategy="fsdp", extra=""):
    job = load_job_text(f"apiVersion: finetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {{name: t}}\nspec:\n"
                        f"  model: {{path: {model_dir}}}\n  dataset: {{paths: [/d.jsonl], format: text}}\n"
                        f"  method: {{type: {method}{extra}}}\n  output: {{path: /tmp/o}}\n")
    return TrainerConfig(job=job, model_path=str(model_dir), output_dir="/tmp/o",
                         plan=LaunchPlan(strategy=strategy, device="cpu"))


def test_the_private_dtensor_helper_is_there_in_the_pinned_torch():
    assert sharded_load.shard_offsets_available(), f"torch {torch.__version__}: update sharded_load._local_rows"


def test_fsdp_lora_and_full_load_in_shards_other_runs_the_plain_way(tiny_model_dir, tmp_path):
    assert sharded_load.applies(cfg(tiny_model_dir))
    assert sharded_load.applies(cfg(tiny_model_dir, "full"))
    assert not sharded_load.applies(cfg(tiny_model_dir, strategy="ddp"))
    assert not sharded_load.applies(cfg(tiny_model_dir, "spectrum"))  # its scan needs the loaded weights
    assert not sharded_load.applies(cfg(tiny_model_dir, extra=", lora: {useDora: true}"))
    other = tmp_path / "m"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(json.loads((tiny_model_dir / "config.json").read_text())
                                                  | {"model_type": "gemma3_text"}))
    assert not sharded_load.applies(cfg(other))  # computed buffers other than rotary ones: not rebuilt here


def test_adapters_start_the_same_whichever_way_the_base_loads():
    a = sharded_load.adapter_init("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", (4, 64), 7)
    b = sharded_load.adapter_init("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight", (4, 64), 7)
    c = sharded_load.adapter_init("base_model.model.model.layers.1.self_attn.q_proj.lora_A.default.weight", (4, 64), 7)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.abs().max() <= (6 / (6 * 64)) ** 0.5
    assert not sharded_load.adapter_init("x.lora_B.default.weight", (64, 4), 7).any()


def test_deepspeed_outside_the_tested_versions_is_refused_by_name():
    import pytest

    from finetune_trainer.errors import EnvironmentProblem

    check_version("0.19.8")
    with pytest.raises(EnvironmentProblem, match="deepspeed 0.21.0 is outside the versions"):
        check_version("0.21.0")
