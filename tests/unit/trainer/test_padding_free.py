"""spec.dataset.paddingFree (default on): each micro-batch's examples run as one row, same loss and gradients as
padded batches, no pad tokens — and it stays off where it does not apply (packed data, preference pairs, CPU).
The equivalence runs on the CPU with SDPA's per-example mask; on GPUs the same rows go to varlen flash
attention, whose equality with per-document SDPA tests/unit/trainer/test_attention.py and tests/gpu check."""

from __future__ import annotations

import random

import pytest

from finetune_api import load_job_text
from finetune_api.trainer_config import LaunchPlan, TrainerConfig
from finetune_trainer import losses, recipe
from finetune_trainer.distributed import Dist
from finetune_trainer.modeling import uses_padding_free

torch = pytest.importorskip("torch")

JOB = """
apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t}
spec:
  model: {path: model}
  dataset: {paths: [train.jsonl], format: text}
  output: {path: out}
"""


def cfg(dataset: str = "format: text", extra: str = "", device: str = "cuda") -> TrainerConfig:
    text = JOB.replace("format: text", dataset) + extra
    return TrainerConfig(job=load_job_text(text), model_path="model", dataset_paths=["train.jsonl"], output_dir="out",
                         plan=LaunchPlan(device=device))


def test_on_by_default_and_off_where_it_does_not_apply():
    assert uses_padding_free(cfg())
    assert not uses_padding_free(cfg(device="cpu"))  # SDPA's per-example mask costs more than the padding
    assert not uses_padding_free(cfg("format: text, packing: true"))  # rows already full
    assert not uses_padding_free(cfg("format: preference", "  objective: {type: dpo}\n"))  # pairs stay padded
    assert not uses_padding_free(cfg("format: text, paddingFree: false"))


def examples(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(4, 40)
        ids = [rng.randint(6, 300) for _ in range(length)]
        prompt = rng.randint(1, length - 1)
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def step_batches(train, padding_free: bool):
    plan = LaunchPlan(micro_batch=4, gradient_accumulation=2)
    d = Dist(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    return recipe.micro_batches(train, plan, 0, len(train) // plan.global_batch, 7, d, 0, padding_free=padding_free)


def test_padding_free_micro_batches_are_one_row_of_the_same_examples_without_pads():
    train = examples(16)
    padded, flat = step_batches(train, False), step_batches(train, True)
    for p, f in zip(padded, flat):
        assert f["input_ids"].shape[0] == 1 and "attention_mask" not in f
        real = p["attention_mask"].bool()
        assert f["input_ids"].shape[1] == int(real.sum()) == f["n_real"] == p["n_real"]  # no pad token computed
        assert f["input_ids"][0].tolist() == p["input_ids"][real].tolist()  # same examples, same order
        assert int((f["labels"] != -100).sum()) == int((p["labels"] != -100).sum())  # same targets
        starts = (f["position_ids"][0] == 0).nonzero().flatten().tolist()
        assert len(starts) == p["input_ids"].shape[0]  # positions restart for every example


def test_padding_free_gives_the_padded_loss_and_gradients(tiny_model_dir):
    """The token-summed loss of every micro-batch, and the gradients it produces, match the padded batch's
    (SDPA on the CPU masks attention per example from the restarting positions; the GPU path is varlen)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    train = examples(16, seed=1)

    def loss_and_grads(padding_free: bool):
        model.zero_grad()
        total = 0.0
        for b in step_batches(train, padding_free):
            b.pop("n_real")
            loss = losses.ce_sum(model, b, torch.device("cpu"))
            loss.backward()
            total += float(loss.detach())
        return total, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    padded_loss, padded_grads = loss_and_grads(False)
    flat_loss, flat_grads = loss_and_grads(True)
    assert flat_loss == pytest.approx(padded_loss, rel=1e-5)
    for name, g in padded_grads.items():
        torch.testing.assert_close(flat_grads[name], g, rtol=1e-4, atol=1e-5)
