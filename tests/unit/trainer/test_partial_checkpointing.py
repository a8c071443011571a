"""Checkpointing only the first k decoder blocks (the memory plan's choice): those blocks recompute, the others
keep their activations, and the gradients are the same as without checkpointing."""

from __future__ import annotations

import pytest

from finetune_trainer.modeling import enable_checkpointing
from finetune_trainer.strategy import decoder_layers

torch = pytest.importorskip("torch")


def grads(model_dir, layers):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.config.use_cache = False
    n = enable_checkpointing(model, layers != "none", None if layers in ("all", "none") else layers)
    model.train()
    ids = torch.randint(6, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    recomputed = []
    for i, block in enumerate(decoder_layers(model)):
        block.mlp.register_forward_pre_hook(lambda mod, args, i=i: recomputed.append(i))  # (recompute stops early:
        # torch ends it once the saved tensors are back, before post-hooks)
    model(input_ids=ids, labels=ids).loss.backward()
    return n, [b.gradient_checkpointing for b in decoder_layers(model)], recomputed, \
        {k: p.grad.clone() for k, p in model.named_parameters()}


def test_first_k_blocks_recompute_and_gradients_match(tiny_model_dir):
    n, flags, calls, g_partial = grads(tiny_model_dir, 1)
    assert n == 1 and flags == [True, False]
    assert calls == [0, 1, 0]  # block 0 runs again in backward, block 1 does not
    n_all, flags_all, calls_all, g_all = grads(tiny_model_dir, "all")
    assert flags_all == [True, True] and calls_all == [0, 1, 1, 0]
    _, _, calls_none, g_none = grads(tiny_model_dir, "none")
    assert calls_none == [0, 1]
    for k, g in g_none.items():
        torch.testing.assert_close(g_partial[k], g, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_all[k], g, rtol=1e-5, atol=1e-6)
