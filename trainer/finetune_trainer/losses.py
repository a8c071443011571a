"""The SFT/CPT loss of one micro-batch: summed next-token cross-entropy over the tokens that have a target.

Summed, not averaged: the recipe divides by the number of target tokens of the whole optimizer step across all
ranks, so the curve is the same for any micro-batch size and process count. Training and evaluation use this
one function, so the validation loss is the training loss on held-out data.
"""

from __future__ import annotations


def ce_sum(model, batch: dict, device):
    """Summed next-token cross-entropy over the tokens with a target (labels != -100)."""
    import torch.nn.functional as F

    from . import attention, liger

    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    inputs |= attention.forward_kwargs(model, batch, device)  # packed rows under varlen: document bounds
    labels = batch["labels"].to(device)
    if liger.fused_loss(model):  # Liger's fused LM head + loss: no logits; it returns sum / num_items_in_batch
        return model(**inputs, labels=labels, num_items_in_batch=1).loss
    logits = model(**inputs).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction="sum")


def target_tokens(batch: dict) -> int:
    """Tokens of `batch` that have a target (what the loss is summed over)."""
    return int((batch["labels"][:, 1:] != -100).sum())
