"""Packing: rows fit, every document appears once, positions restart — and a packed row trains exactly like its
documents would alone (the loss of each document is the same, checked with the tiny Llama model)."""

from __future__ import annotations

import random

import pytest

from finetune_trainer.data import collate, pack_examples
from finetune_trainer.data.encoding import encode_all
from finetune_trainer.data.records import normalize

torch = pytest.importorskip("torch")

WORDS = "the quick brown fox jumps over lazy dog even odd Monday Tuesday chat cat 1 2 3 4".split()


def synthetic(n: int, seed: int = 0, lo: int = 3, hi: int = 40) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.randint(lo, hi)
        ids = [rng.randint(6, 300) for _ in range(length)]
        # odd documents are trained from their first token on, as a bare collator would label them
        labels = [-100 if j < length // 3 and i % 2 == 0 else t for j, t in enumerate(ids)]
        out.append({"input_ids": ids, "labels": labels, "doc": i})
    return out


def documents_of(row: dict) -> list[tuple[list[int], list[int], list[int]]]:
    out, start = [], 0
    for n in row["seq_lens"]:
        end = start + n
        out.append((row["input_ids"][start:end], row["labels"][start:end], row["position_ids"][start:end]))
        start = end
    return out


def test_rows_fit_and_every_document_appears_once_with_restarting_positions():
    examples = synthetic(200)
    rows = pack_examples(examples, max_length=64, seed=1)
    assert all(len(r["input_ids"]) <= 64 and sum(r["seq_lens"]) == len(r["input_ids"]) for r in rows)
    seen = sorted(tuple(ids) for r in rows for ids, _, _ in documents_of(r))
    assert seen == sorted(tuple(e["input_ids"]) for e in examples)
    by_ids = {tuple(e["input_ids"]): e for e in examples}
    for row in rows:
        assert len(row["labels"]) == len(row["position_ids"]) == len(row["input_ids"])
        for ids, labels, positions in documents_of(row):
            assert positions == list(range(len(ids)))
            assert labels[0] == -100 and labels[1:] == by_ids[tuple(ids)]["labels"][1:]


def test_best_fit_fills_rows_tightly_and_is_seeded():
    examples = [{"input_ids": [7] * n, "labels": [-100] + [7] * (n - 1)} for n in (60, 4, 50, 14, 30, 34, 64)]
    rows = pack_examples(examples, max_length=64, seed=0)
    assert sorted(sorted(r["seq_lens"]) for r in rows) == [[4, 60], [14, 50], [30, 34], [64]]
    assert pack_examples(examples, 64, seed=0) == rows
    many = synthetic(100)
    assert pack_examples(many, 64, seed=0) == pack_examples(many, 64, seed=0)
    assert pack_examples(many, 64, seed=0) != pack_examples(many, 64, seed=1)  # row order follows the seed
    total = sum(len(e["input_ids"]) for e in many)
    assert len(pack_examples(many, 64, seed=0)) <= total // 64 + 2


def test_example_longer_than_max_length_is_refused():
    with pytest.raises(ValueError, match="example 1 cannot be packed: 65 tokens"):
        pack_examples([{"input_ids": [1], "labels": [-100]}, {"input_ids": [1] * 65, "labels": [-100] * 65}], 64)


# --- the correctness test: a packed row's loss per document equals each document's loss alone ----------------


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=request.param, dtype=torch.float32)
    return m.eval()


@pytest.fixture(scope="module")
def documents(tiny_tokenizer) -> list[dict]:
    """Real encoded chat and text examples of different lengths."""
    rng = random.Random(3)
    records = []
    for i in range(10):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12)))
        if i % 3 == 0:
            records.append(normalize({"text": words}, "text", "t.jsonl", i + 1))
        else:
            msgs = [{"role": "user", "content": f"Say {words}"}, {"role": "assistant", "content": words}]
            records.append(normalize({"messages": msgs}, "messages", "t.jsonl", i + 1))
    examples, _ = encode_all(records, tiny_tokenizer, max_length=96)
    return examples


def per_token_loss(logits, labels):
    """Cross-entropy of each target labels[j] predicted at j-1 (0 where the label is -100)."""
    return torch.nn.functional.cross_entropy(logits[:-1].float(), labels[1:], ignore_index=-100, reduction="none")


@pytest.fixture(scope="module")
def alone(model, documents) -> dict[tuple, float]:
    """Summed loss of each document run by itself, keyed by its token ids."""
    out = {}
    with torch.no_grad():
        for d in documents:
            logits = model(input_ids=torch.tensor([d["input_ids"]])).logits[0]
            out[tuple(d["input_ids"])] = per_token_loss(logits, torch.tensor(d["labels"])).sum().item()
    return out


@torch.no_grad()
def losses_packed(model, rows, pad_id, **forward) -> dict[tuple, float]:
    batch = collate(rows, pad_id)
    assert "attention_mask" not in batch
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **forward).logits
    out = {}
    for b, row in enumerate(rows):
        token_loss = per_token_loss(logits[b], batch["labels"][b])
        start = 0
        for n in row["seq_lens"]:
            out[tuple(row["input_ids"][start:start + n])] = token_loss[start:start + n - 1].sum().item()
            start += n
    return out


def test_packed_loss_per_document_equals_loss_alone(model, documents, alone, tiny_tokenizer):
    """transformers 5.17 masks attention per document from position_ids when there is no attention_mask and no
    KV cache (masking_utils.find_packed_sequence_indices) — for sdpa and eager alike. Rows of unequal length are
    padded by collate with continuing positions, which must not disturb the documents either."""
    rows = pack_examples(documents, max_length=96, seed=0)
    assert len(rows) >= 2 and len({len(r["input_ids"]) for r in rows}) > 1 and max(len(r["seq_lens"]) for r in rows) > 2
    packed = losses_packed(model, rows, tiny_tokenizer.pad_token_id, use_cache=False)
    assert packed.keys() == alone.keys()
    for key in alone:
        assert packed[key] == pytest.approx(alone[key], abs=1e-4)


def test_model_loss_on_packed_rows_counts_no_cross_document_target(model, documents, alone, tiny_tokenizer):
    """The model's own (mean) loss over a packed batch equals the token-weighted mean of the documents alone."""
    rows = pack_examples(documents, max_length=96, seed=0)
    batch = collate(rows, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        loss = model(**batch, use_cache=False).loss.item()
    trained = sum(sum(lab != -100 for lab in d["labels"]) for d in documents)
    assert loss == pytest.approx(sum(alone.values()) / trained, abs=1e-4)


def test_packed_rows_leak_across_documents_unless_use_cache_is_false(model, documents, alone, tiny_tokenizer):
    """The trap this package's docstring warns of: with the config's default use_cache=True, Llama builds a
    DynamicCache, and with a cache present transformers skips packed-sequence detection. If this test starts
    failing, transformers fixed it; the `use_cache=False` advice can then go."""
    rows = pack_examples(documents, max_length=96, seed=0)
    assert model.config.use_cache
    leaky = losses_packed(model, rows, tiny_tokenizer.pad_token_id)
    assert max(abs(leaky[k] - alone[k]) for k in alone) > 1e-3
