"""The `varlen` attention function: a packed row through it gives each document the loss it has alone.

The flash kernel itself is CUDA-only (tests/gpu/test_attention_gpu.py runs it). Here, on the CPU, the kernel is
replaced by a plain per-document SDPA reference with the same signature, so what is tested is everything of
ours around it: registration with transformers, the document bounds from position_ids (rows flattened into
one stream, padding glued to the last document), the reshapes, GQA, and the SDPA fallbacks.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from finetune_trainer import attention  # noqa: E402
from finetune_trainer.data import collate, pack_examples  # noqa: E402


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), return_aux=None):
    """What torch.nn.attention.varlen.varlen_attn computes, one document at a time (causal for (-1, 0))."""
    assert window_size == (-1, 0) and torch.equal(cu_q, cu_k)
    out = torch.empty_like(q)
    bounds = cu_q.tolist()
    assert max_q == max(b - a for a, b in zip(bounds, bounds[1:]))
    for a, b in zip(bounds, bounds[1:]):
        qd, kd, vd = (t[a:b].transpose(0, 1) for t in (q, k, v))  # (heads, len, dim)
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(
            qd, kd, vd, is_causal=True, scale=scale, enable_gqa=True).transpose(0, 1)
    return out


@pytest.fixture
def kernel_on_cpu(monkeypatch):
    """Route the CPU through the varlen path, with the reference standing in for the flash kernel."""
    from torch.nn.attention import varlen

    calls = []

    def spy(*a, **k):
        calls.append(a[3])
        return reference_varlen(*a, **k)

    monkeypatch.setattr(varlen, "varlen_attn", spy)
    monkeypatch.setattr(attention, "_kernel_runs_on", lambda device: True)
    attention.register()
    return calls


def test_document_bounds_flatten_rows_and_restart_at_each_position_reset():
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3], [0, 1, 0, 1, 2, 3, 4]])
    cu, longest = attention.document_bounds(pos)
    assert cu.tolist() == [0, 3, 7, 9, 14] and cu.dtype == torch.int32 and longest == 5


def test_forward_kwargs_only_for_varlen_models_and_packed_batches():
    class M:
        def __init__(self, name):
            self.config = type("C", (), {"_attn_implementation": name})()

    batch = {"position_ids": torch.tensor([[0, 1, 0, 1, 2]])}
    kw = attention.forward_kwargs(M("varlen"), batch, "cpu")
    assert kw["cu_seq_lens_q"].tolist() == [0, 2, 5] and kw["max_length_q"] == 3
    assert attention.forward_kwargs(M("sdpa"), batch, "cpu") == {}
    assert attention.forward_kwargs(M("varlen"), {"attention_mask": torch.ones(1, 5)}, "cpu") == {}


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(9):
        n = rng.randint(3, 30)
        ids = [rng.randint(6, 300) for _ in range(n)]
        out.append({"input_ids": ids, "labels": [-100] * (n // 3) + ids[n // 3:]})
    return out


def doc_losses(model, rows, pad_id, **extra) -> dict[tuple, float]:
    batch = collate(rows, pad_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False,
                       **extra).logits
    out = {}
    for b, row in enumerate(rows):
        per_token = torch.nn.functional.cross_entropy(logits[b, :-1].float(), batch["labels"][b, 1:],
                                                      ignore_index=-100, reduction="none")
        start = 0
        for n in row["seq_lens"]:
            out[tuple(row["input_ids"][start:start + n])] = per_token[start:start + n - 1].sum().item()
            start += n
    return out


def test_packed_rows_under_varlen_give_each_document_its_loss_alone(kernel_on_cpu, tiny_model_dir, tiny_tokenizer,
                                                                    documents):
    from transformers import AutoModelForCausalLM

    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32).eval()
    fast = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen",
                                                dtype=torch.float32).eval()
    assert fast.config._attn_implementation == "varlen"
    assert fast.config.num_key_value_heads <= fast.config.num_attention_heads
    alone = {}
    with torch.no_grad():
        for d in documents:
            logits = sdpa(input_ids=torch.tensor([d["input_ids"]])).logits[0]
            alone[tuple(d["input_ids"])] = torch.nn.functional.cross_entropy(
                logits[:-1], torch.tensor(d["labels"][1:]), ignore_index=-100, reduction="sum").item()
    rows = pack_examples(documents, max_length=64, seed=0)
    assert len(rows) >= 2 and len({len(r["input_ids"]) for r in rows}) > 1  # collate pads the shorter rows
    pad = tiny_tokenizer.pad_token_id
    for extra in ({}, attention.forward_kwargs(fast, collate(rows, pad), "cpu")):  # bounds per layer, or given
        kernel_on_cpu.clear()
        packed = doc_losses(fast, rows, pad, **extra)
        assert kernel_on_cpu, "the varlen path did not run"
        assert packed.keys() == alone.keys()
        for key in alone:
            assert packed[key] == pytest.approx(alone[key], abs=1e-4)


def test_padded_batches_and_the_cpu_fall_back_to_sdpa(tiny_model_dir, documents, monkeypatch):
    """A right-padded batch (attention_mask) and CPU tensors take SDPA with transformers' own masks."""
    from transformers import AutoModelForCausalLM

    attention.register()
    fast = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="varlen",
                                                dtype=torch.float32).eval()
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32).eval()
    batch = collate(documents[:3], pad_id=0)
    with torch.no_grad():
        want = sdpa(**batch).logits
        got = fast(**batch).logits  # on the CPU: the real _kernel_runs_on says no, so SDPA all the way
    mask = batch["attention_mask"].bool()
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    rows = pack_examples(documents, max_length=64, seed=0)
    packed = collate(rows, 0)
    with torch.no_grad():  # packed rows on the CPU: per-document mask from position_ids, as with sdpa
        a = fast(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        b = sdpa(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
    assert torch.allclose(a, b, atol=1e-5)
