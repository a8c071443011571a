"""Liger's fused Triton kernels for the model's elementwise layers and its loss, when liger-kernel is installed.

Why: after the matmuls, a fine-tune's time goes to passes over activations that the matmuls do not need —
RMSNorm, RoPE, the SwiGLU product — and, with a 128k vocabulary, to the logits: 8k tokens x 128k x fp32 is
4 GiB written, read by softmax and written again as its gradient. Liger fuses each norm, rotary and SwiGLU
into one kernel, and its fused linear cross-entropy (FLCE) computes the LM head and the loss chunk by chunk,
so the logits never exist whole. That saves time and, more, memory, which buys larger micro-batches
without activation checkpointing (bench/results/ has the measured gains).

What changes: `apply_liger(model)` patches the model *instance* (its norms, MLPs and forward) through
Liger's own per-architecture function, plus Liger's module-level RoPE function for that architecture. With
FLCE on, a training forward given `labels` returns the loss and no logits; `fused_loss(model)` tells the
recipe to ask for it that way. Evaluation (no labels) still gets logits. Only on CUDA; no-op elsewhere.
"""

from __future__ import annotations

import importlib.util

_MARK = "_finetune_liger_fused_ce"


def installed() -> bool:
    """Whether liger-kernel can be imported (it is an optional, GPU-only dependency)."""
    return importlib.util.find_spec("liger_kernel") is not None


def apply_liger(model, fused_loss: bool = True) -> bool:
    """Swap in Liger's RMSNorm, RoPE, SwiGLU and fused linear cross-entropy for a supported architecture.

    Args:
        model: a transformers causal LM, before adapters are added.
        fused_loss: also the fused linear cross-entropy. False under DeepSpeed ZeRO-3: FLCE reads the LM head's
            weight as an attribute, outside the head's forward, where ZeRO-3 has not gathered it (an empty shard).

    Returns:
        True if the kernels were applied; False when liger-kernel is missing, the model is not on CUDA
        kernels' path, or Liger has no patch for its architecture.
    """
    if not installed():
        return False
    from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN, _apply_liger_kernel_to_instance

    if getattr(model.config, "model_type", None) not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        return False
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True,
                                    fused_linear_cross_entropy=fused_loss, cross_entropy=False)
    setattr(model, _MARK, fused_loss)
    return True


def describe(model) -> str:
    """What the kernels of `model` are, for the run's log: Liger on or off, the fused loss, fast LoRA layers."""
    inner = getattr(model, "module", model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    parts = [("Liger on" + (", fused loss" if fused_loss(model) else "")) if hasattr(base, _MARK) else "Liger off"]
    fast = getattr(inner, "_finetune_fast_lora_layers", None)
    if fast is not None:
        parts.append(f"fast LoRA forward on {fast} layers")
    return ", ".join(parts)


def fused_loss(model) -> bool:
    """Whether `model` (possibly wrapped by DDP and peft) computes its training loss with Liger's FLCE.

    False when the LM head itself carries an adapter: FLCE reads the head's base weight only.
    """
    import torch

    inner = getattr(model, "module", model)  # DDP
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if not getattr(base, _MARK, False):
        return False
    head = base.get_output_embeddings()
    return type(head) is torch.nn.Linear
