"""Full weights are streamed into Hugging Face safetensors shards + index that `from_pretrained` loads exactly."""

from __future__ import annotations

import json

import torch

from finetune_trainer.distributed import Dist
from finetune_trainer.outputs import write_shards
from finetune_trainer.replicated import Replicated


def test_streamed_shards_load_with_from_pretrained_and_equal_the_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    strat = Replicated(model, Dist(0, 1, 0, torch.device("cpu")), "cpu")
    files = write_shards(strat.full_weights(torch.bfloat16), tmp_path, main=True, max_shard_bytes=60_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len([f for f in files if f.endswith(".safetensors")]) >= 3  # really sharded
    assert set(index["weight_map"].values()) == {f for f in files if f.endswith(".safetensors")}
    assert not list(tmp_path.glob(".part-*")), "temp names renamed away"
    from safetensors.torch import load_file

    assert {t.dtype for f in files if f.endswith(".safetensors") for t in load_file(tmp_path / f).values()} \
        == {torch.bfloat16}  # the spec's dtype, not the fp32 training copy
    model.config.save_pretrained(tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    want = {k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    got = back.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)


def test_other_ranks_consume_the_stream_but_write_nothing(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    strat = Replicated(model, Dist(1, 1, 0, torch.device("cpu")), "cpu")  # rank 1 (no group needed here)
    assert write_shards(strat.full_weights(torch.bfloat16), tmp_path, main=False) == []
    assert not list(tmp_path.iterdir())
