"""Held-out evaluation: token-weighted validation loss (all ranks) and greedy exact match (rank 0).

Exact match is the task metric a person checks first ("does it answer the held-out prompts right?"):
the prompt is everything before the last trained span of an example, the reference is that span, and the
model's greedy continuation must reproduce it token for token (end-of-turn included).
"""

from __future__ import annotations

from typing import Optional

from .distributed import Dist, all_sum

MAX_EXACT_MATCH_EXAMPLES = 64


def eval_loss(model, examples: list[dict], micro: int, d: Dist, pad_id: int) -> float:
    """Mean next-token loss over every target token of `examples`, sharded over ranks."""
    import torch

    from .data import collate
    from .losses import ce_sum, target_tokens
    from .preference import shares

    total = count = 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for idx in shares(len(examples), micro, d.rank, d.world):  # equal batch counts: sharded models
            b = collate([examples[i] for i in (idx or [0])], pad_id)
            if not idx:
                b["labels"].fill_(-100)  # a dummy forward that counts nothing
            total += float(ce_sum(model, b, d.device))
            count += float(target_tokens(b))
    model.train(was_training)
    total, count = all_sum([total, count], d)
    return total / max(count, 1.0)


def split_prompt_answer(example: dict) -> Optional[tuple[list[int], list[int]]]:
    """(prompt ids, reference ids): the last contiguous run of trained tokens is the reference."""
    labels = example["labels"]
    end = len(labels)
    while end > 0 and labels[end - 1] == -100:
        end -= 1
    if end == 0:
        return None
    start = end
    while start > 0 and labels[start - 1] != -100:
        start -= 1
    if start == 0:  # nothing to condition on (raw text): not a prompt/answer example
        return None
    ids = example["input_ids"]
    return list(ids[:start]), list(ids[start:end])


def exact_match(model, tokenizer, examples: list[dict], device, limit: int = MAX_EXACT_MATCH_EXAMPLES) -> Optional[float]:
    """Fraction of (up to `limit`) examples whose greedy answer equals the reference exactly; None if none apply."""
    import torch

    pairs = [p for p in (split_prompt_answer(e) for e in examples if "input_ids" in e) if p][:limit]
    if not pairs:
        return None
    was_training = model.training
    model.eval()
    hits = 0
    with torch.no_grad():
        for prompt, ref in pairs:
            ids = torch.tensor([prompt], device=device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(ref),
                                 do_sample=False, use_cache=True, pad_token_id=tokenizer.pad_token_id)
            hits += out[0, len(prompt):].tolist() == ref
    model.train(was_training)
    return hits / len(pairs)
