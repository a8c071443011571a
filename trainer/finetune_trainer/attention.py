"""Padding-free attention for packed rows: PyTorch's own varlen flash attention, registered with transformers.

Why: a packed row holds many documents, and each may only attend to itself (data/packing.py). SDPA gets that
from a materialised (rows, 1, S, S) mask and still computes every masked-out block; flex attention skips
them but pays for building a block mask per batch. Flash attention's varlen kernel takes the document
boundaries as cumulative lengths (`cu_seqlens`) and computes only the causal blocks inside each document:
the least work there is. torch 2.11 ships that kernel (`torch.nn.attention.varlen.varlen_attn`), so no
flash-attn wheel is needed. Measured on W1 (bench/results/): see the ablation table there.

How it plugs in: `register()` adds an attention function named `varlen` to transformers' AttentionInterface
and a mask function of the same name. On the training path (no padding mask, no KV cache) the mask function
builds nothing and the attention function runs the varlen kernel on the batch flattened to one token
stream, with boundaries from `cu_seq_lens_q` (which `forward_kwargs` computes on the host, once per
micro-batch) or else from `position_ids` (a restart of the positions starts a document, as transformers'
own packed-sequence detection reads them). Anywhere else — right-padded batches with an attention mask,
generation with a KV cache, CPU tensors — both fall back to SDPA, so `varlen` is safe as a model-wide
setting.
"""

from __future__ import annotations

from typing import Any

NAME = "varlen"
_registered = False
_gqa_native = True  # the flash kernel takes fewer key/value heads than query heads; set False if it refuses


def available() -> bool:
    """Whether this torch has the varlen kernel and a CUDA GPU to run it."""
    try:
        import torch
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def register() -> None:
    """Make `attn_implementation="varlen"` known to transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, _varlen_mask)
    _registered = True


def document_bounds(position_ids) -> tuple[Any, int]:
    """Cumulative document lengths of a batch of packed rows, flattened to one token stream.

    A document starts wherever the position does not follow the previous one by exactly 1 (the first token,
    every restart at 0, and each row's start), as `masking_utils.find_packed_sequence_indices` reads it.

    Args:
        position_ids: (rows, length) integer tensor.

    Returns:
        (cu_seqlens as int32 of shape (documents + 1,), longest document length).
    """
    import torch

    flat = position_ids.reshape(-1)
    start = torch.ones_like(flat, dtype=torch.bool)
    start[1:] = (flat[1:] - flat[:-1]) != 1
    idx = torch.nonzero(start).flatten()
    cu = torch.cat([idx, idx.new_tensor([flat.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


def forward_kwargs(model, batch: dict, device) -> dict:
    """Extra forward kwargs for a packed micro-batch when the model runs `varlen` attention, else {}.

    Computing the boundaries here, on the host copy of `position_ids`, spares every layer a device sync.
    """
    inner = getattr(model, "module", model)  # DDP
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != NAME or "position_ids" not in batch:
        return {}
    cu, longest = document_bounds(batch["position_ids"])
    cu = cu.to(device, non_blocking=True)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": longest, "max_length_k": longest}


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout: float = 0.0,
                             **kwargs):
    """transformers attention function: causal attention within each document of a packed batch.

    Args:
        module: the attention layer (transformers passes it; unused here).
        query: (batch, heads, length, head_dim); key, value: (batch, kv_heads, length, head_dim).
        attention_mask: None on the training path; a padding mask sends the call to SDPA.
        scaling: softmax scale (head_dim ** -0.5 for Llama).
        dropout: attention dropout; must be 0 on the varlen path (the kernel call here has none).
        kwargs: `cu_seq_lens_q` / `max_length_q` if the caller computed them, else `position_ids`.

    Returns:
        (output of shape (batch, length, heads, head_dim), None).
    """
    global _gqa_native
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, hq, s, d = query.shape
    if attention_mask is not None or key.shape[2] != s or not _kernel_runs_on(query.device) or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    from torch.nn.attention.varlen import varlen_attn

    dtype = query.dtype
    if query.is_cuda and dtype not in (torch.float16, torch.bfloat16):
        # the flash kernel takes half types only; q/k come out fp32 when RoPE's cos/sin follow fp32 hidden
        # states: full fine-tuning's fp32 master weights under bf16 autocast, QLoRA's fp32 norms/embeddings
        half = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
        query, key, value = query.to(half), key.to(half), value.to(half)  # output back in `dtype`, as SDPA's

    cu = kwargs.get("cu_seq_lens_q")
    if cu is not None:
        longest = int(kwargs["max_length_q"])
    else:
        pos = kwargs.get("position_ids")
        if pos is None:
            pos = torch.arange(s, device=query.device).expand(b, s)
        cu, longest = document_bounds(pos.expand(b, s))
    q = query.transpose(1, 2).reshape(b * s, hq, d)
    k = key.transpose(1, 2).reshape(b * s, key.shape[1], d)
    v = value.transpose(1, 2).reshape(b * s, value.shape[1], d)
    if not _gqa_native and k.shape[1] != hq:
        k, v = (t.repeat_interleave(hq // t.shape[1], dim=1) for t in (k, v))
    try:
        out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=(-1, 0))
    except RuntimeError:
        if not _gqa_native or k.shape[1] == hq:
            raise
        _gqa_native = False
        k, v = (t.repeat_interleave(hq // t.shape[1], dim=1) for t in (k, v))
        out = varlen_attn(q, k, v, cu, cu, longest, longest, scale=scaling, window_size=(-1, 0))
    return out.view(b, s, hq, d).to(dtype), None


def _kernel_runs_on(device) -> bool:
    """The flash kernel is CUDA-only; elsewhere SDPA with the per-document mask does the same maths."""
    return device.type == "cuda"


def _varlen_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                 attention_mask=None, **kwargs):
    """No mask on the training path (documents come from cu_seqlens); SDPA's mask elsewhere."""
    import torch
    from transformers.masking_utils import sdpa_mask

    on_kernel = _kernel_runs_on(torch.device(kwargs.get("device", "cpu")))
    if on_kernel and attention_mask is None and q_length == kv_length and not q_offset and not kv_offset:
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, **kwargs)
