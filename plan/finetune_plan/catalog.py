"""The shapes of well-known models, by hub id: what the planner needs when the model's config.json is out of reach.

Why: the operator plans before any pod exists and cannot read a model on a volume or the hub (no network in
many clusters), and `finetune plan --model <hub id>` answers for a machine and a model you do not have. For the
models users of this field fine-tune most, the few numbers the planner needs are copied here from each model's
published config.json (hidden size, MLP width, layers, attention and key/value heads, head size, vocabulary,
tied embeddings; experts and experts per token for a mixture of experts). Any other model is planned from its
own config.json where it can be read.
"""

from __future__ import annotations

from typing import Optional

from .memory import ModelShape


def _llama(vocab, hidden, inter, layers, heads, kv, head_dim=None, tied=False, model_type="llama") -> ModelShape:
    return ModelShape(vocab=vocab, hidden=hidden, intermediate=inter, layers=layers, heads=heads, kv_heads=kv,
                      head_dim=head_dim or hidden // heads, tied=tied, model_type=model_type)


def _moe(vocab, hidden, expert_inter, layers, heads, kv, head_dim, experts, per_token, tied=False,
         model_type="gpt_oss") -> ModelShape:
    return ModelShape(vocab=vocab, hidden=hidden, intermediate=expert_inter, layers=layers, heads=heads, kv_heads=kv,
                      head_dim=head_dim, tied=tied, experts=experts, experts_per_token=per_token, model_type=model_type)


SHAPES: dict[str, ModelShape] = {
    "meta-llama/llama-3.2-1b": _llama(128256, 2048, 8192, 16, 32, 8, 64, tied=True),
    "meta-llama/llama-3.2-3b": _llama(128256, 3072, 8192, 28, 24, 8, 128, tied=True),
    "meta-llama/llama-3.1-8b": _llama(128256, 4096, 14336, 32, 32, 8),
    "meta-llama/llama-3.1-70b": _llama(128256, 8192, 28672, 80, 64, 8),
    "meta-llama/llama-3.3-70b-instruct": _llama(128256, 8192, 28672, 80, 64, 8),
    "meta-llama/llama-3.1-405b": _llama(128256, 16384, 53248, 126, 128, 8),
    "mistralai/mistral-7b-v0.3": _llama(32768, 4096, 14336, 32, 32, 8, model_type="mistral"),
    "qwen/qwen2.5-7b": _llama(152064, 3584, 18944, 28, 28, 4, model_type="qwen2"),
    "qwen/qwen2.5-14b": _llama(152064, 5120, 13824, 48, 40, 8, model_type="qwen2"),
    "qwen/qwen2.5-32b": _llama(152064, 5120, 27648, 64, 40, 8, model_type="qwen2"),
    "qwen/qwen2.5-72b": _llama(152064, 8192, 29568, 80, 64, 8, model_type="qwen2"),
    "qwen/qwen3-8b": _llama(151936, 4096, 12288, 36, 32, 8, 128, model_type="qwen3"),
    "qwen/qwen3-32b": _llama(151936, 5120, 25600, 64, 64, 8, 128, model_type="qwen3"),
    "microsoft/phi-3.5-mini-instruct": _llama(32064, 3072, 8192, 32, 32, 32, model_type="phi3"),
    "google/gemma-2-9b": _llama(256000, 3584, 14336, 42, 16, 8, 256, tied=True, model_type="gemma2"),
    "google/gemma-2-27b": _llama(256000, 4608, 36864, 46, 32, 16, 128, tied=True, model_type="gemma2"),
    # mixtures of experts (116.8B / 20.9B parameters, 4 of 128 / 32 experts per token); the hub's MXFP4 experts
    # load as bf16 in the trainer (transformers dequantizes them), so they are counted at 2 bytes
    "openai/gpt-oss-120b": _moe(201088, 2880, 2880, 36, 64, 8, 64, 128, 4),
    "openai/gpt-oss-20b": _moe(201088, 2880, 2880, 24, 64, 8, 64, 32, 4),
}
_SUFFIXES = ("-instruct", "-it")


def shape_for_hub_id(hub_id: Optional[str]) -> Optional[ModelShape]:
    """The catalog's shape for `hub_id` (case-insensitive; an -Instruct/-it variant has its base's), or None."""
    if not hub_id:
        return None
    key = hub_id.lower()
    if key in SHAPES:
        return SHAPES[key]
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and key[: -len(suffix)] in SHAPES:
            return SHAPES[key[: -len(suffix)]]
    return None
