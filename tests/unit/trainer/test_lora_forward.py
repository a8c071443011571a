"""The fast LoRA forward computes peft's function: same outputs and same adapter gradients, and it steps
aside (peft's own forward) for disabled adapters, DoRA and merged weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from finetune_trainer.lora_forward import use_fast_lora_forward  # noqa: E402


def lora_pair(tiny_model_dir, **lora):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    models = []
    for _ in range(2):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, **lora)
        m = get_peft_model(base, cfg)
        for name, p in m.named_parameters():  # B starts at zero in peft: make the adapters do something
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.05)
        models.append(m)
    return models


def test_outputs_and_adapter_gradients_equal_peft(tiny_model_dir):
    ref, fast = lora_pair(tiny_model_dir)
    fast.load_state_dict(ref.state_dict())
    assert use_fast_lora_forward(fast) == 14  # 7 linears x 2 layers
    ids = torch.randint(6, 300, (2, 24))
    labels = ids.clone()
    for m in (ref, fast):
        m(input_ids=ids, labels=labels).loss.backward()
    assert torch.allclose(ref(input_ids=ids).logits, fast(input_ids=ids).logits, atol=1e-5)
    grads = {n: p.grad for n, p in ref.named_parameters() if p.requires_grad}
    for n, p in fast.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.allclose(p.grad, grads[n], atol=1e-6), n
    with fast.disable_adapter(), ref.disable_adapter():
        assert torch.allclose(ref(input_ids=ids).logits, fast(input_ids=ids).logits, atol=1e-5)


def test_dora_keeps_peft_forward(tiny_model_dir):
    ref, fast = lora_pair(tiny_model_dir, use_dora=True)
    fast.load_state_dict(ref.state_dict())
    use_fast_lora_forward(fast)
    ids = torch.randint(6, 300, (1, 16))
    with torch.no_grad():
        assert torch.allclose(ref(input_ids=ids).logits, fast(input_ids=ids).logits, atol=1e-5)
