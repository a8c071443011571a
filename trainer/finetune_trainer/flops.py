"""FLOPs per token and MFU, counted exactly as ../shared/benchmark.md says (so figures compare with the field's).

N = parameters of every matmul in the forward pass (all linear layers including lm_head; not the embedding
lookup); full fine-tuning 6N + 12·L·d·T; frozen base (LoRA) 4N + 12·L·d·T + 6·N_lora; partial freeze
(Spectrum) 4N + 2·N_trainable + 12·L·d·T. Peak: 989.5e12 dense bf16 FLOP/s (H100/H200 SXM).
"""

from __future__ import annotations

PEAK_FLOPS_BF16 = 989.5e12


def matmul_params(model) -> tuple[int, int]:
    """(N, N_trainable_in_matmuls): weights of all linear layers of the base, and of the trainable ones."""
    import torch

    n = n_train = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name:
            n += mod.weight.numel()
            if mod.weight.requires_grad:
                n_train += mod.weight.numel()
    return n, n_train


def flops_per_token(model, method: str, seq_len: int) -> float:
    """Training FLOPs per token for `method` at (packed document) length `seq_len`."""
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", 0)
    hidden = getattr(cfg, "hidden_size", 0)
    attn = 12 * layers * hidden * seq_len
    n, n_train = matmul_params(model)
    if method == "full":
        return 6 * n + attn
    if method in ("lora", "qlora"):
        n_lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
        return 4 * n + attn + 6 * n_lora
    return 4 * n + 2 * n_train + attn


def mfu(tokens_per_s_per_gpu: float, flops_token: float, peak: float = PEAK_FLOPS_BF16) -> float:
    """Model FLOPs utilisation (0..1)."""
    return tokens_per_s_per_gpu * flops_token / peak
