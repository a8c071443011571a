"""Pack encoded examples into rows of at most maxLength tokens, with no padding and no cross-talk.

Fine-tuning data is mostly short (median a few hundred tokens) with a long tail; padding every batch to its
longest member wastes most of the GPU. Packing glues whole examples into rows instead; it is only *correct*
if every example trains exactly as it would alone. Three things make that so:

1. Positions restart at 0 for every document (`position_ids`), so rotary embeddings see the same positions.
2. Attention stays inside each document. transformers 5 does this by itself when a batch has `position_ids`
   and *no* `attention_mask` and *no* KV cache: `masking_utils.find_packed_sequence_indices` turns each
   restart of the positions into a new document and ANDs a block-diagonal mask into the causal one (eager and
   SDPA materialise it; flex/flash attention get block masks / cu_seqlens from the same position ids). The
   trap, checked in 5.17: Llama-style models build a `DynamicCache` whenever `use_cache` is true — and the
   config default is true — and with a cache present the packed-sequence detection is skipped, so documents
   silently attend to each other. **The training forward must pass `use_cache=False`** (gradient
   checkpointing turns it off too); tests/unit/trainer/data/test_packing.py shows both sides.
3. No document is trained to follow the previous one: causal LMs shift labels left, so `labels[j]` is
   predicted from token j-1. Setting the label of each document's first token to -100 removes the only target
   that crosses a boundary. encoding.py already writes -100 there for every example, and we enforce it here.

Rows are filled best-fit decreasing (longest examples first, each into the fullest row it fits), which
leaves ~1-3% of a row empty on realistic length mixes; the rows are then shuffled with the seed so a batch
is not all long documents.
"""

from __future__ import annotations

import bisect
import random

IGNORE = -100


def _row(docs: list[dict]) -> dict:
    row: dict = {"input_ids": [], "labels": [], "position_ids": [], "seq_lens": []}
    for doc in docs:
        n = len(doc["input_ids"])
        row["input_ids"].extend(doc["input_ids"])
        row["labels"].append(IGNORE)  # never a target of the previous document's last token
        row["labels"].extend(doc["labels"][1:])
        row["position_ids"].extend(range(n))
        row["seq_lens"].append(n)
    return row


def one_row(examples: list[dict]) -> dict:
    """`examples` concatenated into one packed row (spec.dataset.paddingFree: a micro-batch without padding).

    Same row format as `pack_examples`, so collate and attention treat it alike; the examples keep their order.
    """
    return _row(examples)


def pack_examples(examples: list[dict], max_length: int, seed: int = 0) -> list[dict]:
    """Pack `{"input_ids", "labels"}` examples into rows of at most `max_length` tokens.

    Args:
        examples: encoded examples (encoding.py); each at most `max_length` tokens, none empty.
        max_length: the row length limit.
        seed: seeds the order of the returned rows.

    Returns:
        Rows `{"input_ids", "labels", "position_ids", "seq_lens"}`: the concatenated documents, their labels
        (-100 at each document start), positions restarting at 0 per document, and the document lengths
        (summing to the row length). Every example appears in exactly one row, whole.

    Raises:
        ValueError: an example is empty or longer than `max_length`, or lengths of ids and labels differ.
    """
    for i, ex in enumerate(examples):
        n = len(ex["input_ids"])
        if n == 0 or n > max_length or len(ex["labels"]) != n:
            raise ValueError(f"example {i} cannot be packed: {n} tokens, {len(ex['labels'])} labels, "
                             f"max_length={max_length} (encode with the same maxLength first)")
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]["input_ids"]), i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (tokens still free, row index), sorted: best fit = first that fits
    for i in order:
        n = len(examples[i]["input_ids"])
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, r = free.pop(k)
        else:
            room, r = max_length, len(rows)
            rows.append([])
        rows[r].append(i)
        if room - n > 0:
            bisect.insort(free, (room - n, r))
    packed = [_row([examples[i] for i in members]) for members in rows]
    random.Random(seed).shuffle(packed)
    return packed
