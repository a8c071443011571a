"""Stack encoded examples (or packed rows) into the tensors a causal LM's forward takes.

Written by hand because the two shapes need different padding and neither stock collator does both:
`DataCollatorForSeq2Seq` pads unpacked examples but knows nothing of `position_ids`, and
`DataCollatorWithFlattening` flattens a batch into one row itself, not rows we already packed to a length.

- Unpacked examples: right-pad `input_ids` with the pad id, `labels` with -100, and an `attention_mask`
  (1 = real token).
- Packed rows: no `attention_mask` at all — transformers derives the per-document mask from `position_ids`
  (see packing.py, and pass `use_cache=False`). Shorter rows are padded to the longest with the pad id,
  labels -100, and positions *continuing* the last document's, so the padding reads as the tail of that
  document: it attends backwards only, changes nothing before it, and is never a target.
"""

from __future__ import annotations

IGNORE = -100


def collate(batch: list[dict], pad_id: int) -> dict[str, "torch.Tensor"]:
    """Pad a batch of examples, or of packed rows, to its longest member.

    Args:
        batch: encoded examples `{"input_ids", "labels"}`, or packed rows that also have `position_ids`
            (any other keys, such as `seq_lens`, are not passed on).
        pad_id: the token id used for padding (the tokenizer's pad token, or EOS when it has none).

    Returns:
        int64 tensors of shape (batch, longest): `input_ids`, `labels`, and `attention_mask` for unpacked
        examples or `position_ids` for packed rows.

    Raises:
        ValueError: the batch is empty, mixes packed rows and plain examples, or pad_id is None.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    if pad_id is None:
        raise ValueError("pad_id is None: the tokenizer has no pad token; pass its eos_token_id instead")
    packed = "position_ids" in batch[0]
    if any(("position_ids" in ex) != packed for ex in batch):
        raise ValueError("batch mixes packed rows and plain examples; pack all of them or none")
    longest = max(len(ex["input_ids"]) for ex in batch)
    out: dict[str, list] = {"input_ids": [], "labels": []}
    out["position_ids" if packed else "attention_mask"] = []
    for ex in batch:
        n = len(ex["input_ids"])
        pad = longest - n
        out["input_ids"].append(list(ex["input_ids"]) + [pad_id] * pad)
        out["labels"].append(list(ex["labels"]) + [IGNORE] * pad)
        if packed:
            last = ex["position_ids"][-1] if n else -1
            out["position_ids"].append(list(ex["position_ids"]) + list(range(last + 1, last + 1 + pad)))
        else:
            out["attention_mask"].append([1] * n + [0] * pad)
    import torch  # here, not at the top: `finetune validate --skip-model` reads data files without torch

    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
