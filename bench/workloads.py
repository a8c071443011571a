"""The benchmark workloads W1-W3 of ../shared/benchmark.md: model configs, methods, batch shapes, synthetic data.

Weights cannot be downloaded here, and throughput does not depend on their values, so each model is built
from its real architecture's config with random bf16 weights and saved once per GPU lease
(`build_model_dir`); both trainers then load it with `from_pretrained`, the path a user's job takes.

The data is token ids, not text (a small trained tokenizer cannot cover a 128k vocabulary): prompt+response
lengths log-normal with median 350 tokens, clipped to [16, 2048]; the prompt part (20-80% of each example)
masked with -100, as the seed tutorials' chat formatting does; ids drawn from a Zipf law over the
vocabulary, as real text's are, so a LoRA can lower the loss within 50 steps and the loss comparison between
the two trainers means something.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

LLAMA_31_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 8192},
    tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001, hidden_act="silu",
)
LLAMA_31_70B = dict(LLAMA_31_8B, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64)
LLAMA_32_1B = dict(LLAMA_31_8B, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, head_dim=64,
                   rope_scaling=dict(LLAMA_31_8B["rope_scaling"], factor=32.0), tie_word_embeddings=True)


def pad_id(config: dict) -> int:
    """The pad id: Llama 3's <|finetune_right_pad_id|> (128004) for its vocabulary; never a target."""
    return config["vocab_size"] - 252


def device() -> str:
    """cuda when there is a GPU; cpu only for `run.py --smoke` (checks the harness, measures nothing)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Workload:
    """One row of benchmark.md's workload table, plus the batch shape each trainer runs it with.

    Attributes:
        id: W1, W2, W3.
        model: name of the real architecture whose config `config` copies.
        config: LlamaConfig keyword arguments.
        method: lora, qlora or full (the FineTuneJob's spec.method.type).
        max_length: longest example (and our packed row length), tokens.
        baseline_batch: the seed-style per-device batch (padded to the longest example in it).
        ours_micro: packed rows per forward pass in our trainer.
        ours_accumulation: micro-batches per optimizer step in our trainer.
        ours_checkpointing: activation checkpointing in our trainer (off where memory allows).
    """

    id: str
    model: str
    config: dict = field(repr=False)
    method: str
    max_length: int = 2048
    lora_rank: int = 16
    lora_alpha: float = 32.0
    baseline_batch: int = 4
    ours_micro: int = 6
    ours_accumulation: int = 2
    ours_checkpointing: bool = False


WORKLOADS = {
    "W1": Workload("W1", "Llama-3.1-8B", LLAMA_31_8B, "lora"),
    # QLoRA is chosen for memory: ours checkpoints activations (the baseline does too)
    "W2": Workload("W2", "Llama-3.1-8B", LLAMA_31_8B, "qlora", ours_micro=4, ours_accumulation=3,
                   ours_checkpointing=True),
    # the planner's choice on an 80 GB GPU for 16 rows per step: one micro-batch of 16, no checkpointing
    "W3": Workload("W3", "Llama-3.2-1B", LLAMA_32_1B, "full", ours_micro=16, ours_accumulation=1),
}


def smoke(w: Workload) -> Workload:
    """The same workload on a 2-layer, 64-wide Llama with a 2k vocabulary: a harness check that runs on a CPU."""
    from dataclasses import replace

    tiny = dict(w.config, vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16, bos_token_id=1, eos_token_id=2)
    return replace(w, model=w.model + " (smoke)", config=tiny, max_length=256, ours_micro=2, ours_accumulation=2)


def synthetic_examples(n: int, seed: int, vocab: int = 128256, max_length: int = 2048, median: float = 350.0,
                       sigma: float = 0.9) -> list[dict]:
    """`n` pre-tokenized SFT examples `{"input_ids", "labels"}` with realistic lengths (fixed by `seed`).

    Args:
        n: examples.
        seed: fixes lengths, prompt shares and ids.
        vocab: ids are drawn from [0, vocab) minus the 256 reserved ids at the top (Llama 3's specials).
        max_length: lengths are clipped to [16, max_length].
        median: median length of the log-normal.
        sigma: its log-space standard deviation (0.9 gives a mean near 520 and a few % at the clip).

    Returns:
        Examples whose labels are -100 over the prompt (always including the first token) and the ids elsewhere.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(math.log(median), sigma, n)), 16, max_length).astype(int)
    usable = vocab - 256
    ranks = np.arange(1, usable + 1, dtype=np.float64)
    p = 1.0 / (ranks + 2.7) ** 1.07  # Zipf-Mandelbrot, close to English BPE token frequencies
    cdf = np.cumsum(p / p.sum())
    ids_of_rank = rng.permutation(usable)
    out = []
    for length in lengths:
        ranks_drawn = np.minimum(np.searchsorted(cdf, rng.random(int(length))), usable - 1)
        ids = ids_of_rank[ranks_drawn].tolist()
        prompt = max(1, int(length * rng.uniform(0.2, 0.8)))
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def trainable_tokens(example: dict) -> int:
    """Tokens with a target, counted as both trainers count them (labels after the left shift)."""
    return sum(1 for t in example["labels"][1:] if t != -100)


def build_model_dir(w: Workload, path: Path, seed: int = 0) -> Path:
    """Random-init the workload's architecture in bf16 on the GPU and `save_pretrained` it to `path` (once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (path / "config.json").exists():
        return path
    torch.manual_seed(seed)
    config = LlamaConfig(**w.config)
    with torch.device(device()):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(path, max_shard_size="5GB")
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return path
