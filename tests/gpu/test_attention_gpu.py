"""On a CUDA GPU: the real varlen flash kernel gives each packed document what SDPA gives it alone, and the
trainer's loss through Liger's fused linear cross-entropy equals the plain logits + cross-entropy sum.

Run on the device machine: `pytest -m gpu tests/gpu`.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_varlen_kernel_matches_per_document_sdpa_with_gqa():
    from finetune_trainer import attention

    torch.manual_seed(0)
    lens = [1, 17, 300, 64, 5, 611]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    n, hq, hkv, d = sum(lens), 32, 8, 128
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, hkv, n, d, device="cuda", dtype=torch.bfloat16)
    out, _ = attention.varlen_attention_forward(None, q, k, v, None, scaling=d ** -0.5, cu_seq_lens_q=cu,
                                                max_length_q=max(lens))
    ref = torch.empty_like(out)
    start = 0
    for m in lens:
        sl = slice(start, start + m)
        ref[0, sl] = torch.nn.functional.scaled_dot_product_attention(
            q[:, :, sl].float(), k[:, :, sl].float(), v[:, :, sl].float(), is_causal=True, enable_gqa=True,
        ).transpose(1, 2)[0].to(out.dtype)
        start += m
    rel = (out.float() - ref.float()).norm() / ref.float().norm()
    assert rel < 1e-2, rel


def test_packed_loss_per_document_under_varlen_equals_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from finetune_trainer import attention
    from finetune_trainer.data import collate, pack_examples

    attention.register()
    rng = random.Random(1)
    docs = []
    for _ in range(12):
        n = rng.randint(3, 60)
        ids = [rng.randint(6, 300) for _ in range(n)]
        docs.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    fast = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen",
                                                dtype=torch.bfloat16).cuda().eval()  # flash: bf16/fp16 only
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa",
                                                dtype=torch.bfloat16).cuda().eval()
    rows = pack_examples(docs, max_length=128, seed=0)
    batch = collate(rows, 0)
    kw = attention.forward_kwargs(fast, batch, "cuda")
    with torch.no_grad():
        logits = fast(input_ids=batch["input_ids"].cuda(), position_ids=batch["position_ids"].cuda(),
                      use_cache=False, **kw).logits.float()
        for b, row in enumerate(rows):
            start = 0
            for n in row["seq_lens"]:
                ids = torch.tensor([row["input_ids"][start:start + n]], device="cuda")
                alone = sdpa(input_ids=ids).logits.float()[0]
                assert torch.allclose(logits[b, start:start + n], alone, atol=5e-2, rtol=5e-2)
                start += n


def test_liger_fused_loss_equals_logits_cross_entropy_sum(tiny_model_dir):
    pytest.importorskip("liger_kernel")
    from transformers import AutoModelForCausalLM

    from finetune_trainer import liger

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).cuda()
    assert liger.apply_liger(model) and liger.fused_loss(model)
    model.train()
    ids = torch.randint(6, 300, (2, 50), device="cuda")
    labels = ids.clone()
    labels[:, :10] = -100
    fused = model(input_ids=ids, labels=labels, num_items_in_batch=1).loss
    logits = plain(input_ids=ids).logits
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                            ignore_index=-100, reduction="sum")
    assert fused.item() == pytest.approx(ref.item(), rel=2e-2)


def test_varlen_takes_fp32_inputs_under_autocast_and_without():
    """Full fine-tuning (fp32 master weights, bf16 autocast) and QLoRA (fp32 norms) hand the kernel fp32 q/k:
    it runs them in half precision and answers in the input's dtype, close to the bf16 call's result."""
    from finetune_trainer import attention

    torch.manual_seed(0)
    lens = [5, 40, 83]
    cu = torch.tensor([0, 5, 45, 128], dtype=torch.int32, device="cuda")
    q, k, v = (torch.randn(1, h, 128, 64, device="cuda") for h in (8, 2, 2))
    ref, _ = attention.varlen_attention_forward(None, q.bfloat16(), k.bfloat16(), v.bfloat16(), None,
                                                scaling=0.125, cu_seq_lens_q=cu, max_length_q=max(lens))
    out, _ = attention.varlen_attention_forward(None, q, k, v, None, scaling=0.125, cu_seq_lens_q=cu,
                                                max_length_q=max(lens))
    assert out.dtype == torch.float32 and torch.allclose(out, ref.float(), atol=1e-2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out2, _ = attention.varlen_attention_forward(None, q, k, v, None, scaling=0.125, cu_seq_lens_q=cu,
                                                     max_length_q=max(lens))
    assert torch.allclose(out2, ref.float(), atol=1e-2)
