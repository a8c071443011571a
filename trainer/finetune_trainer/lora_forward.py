"""A faster forward for peft's LoRA linear layers: adapter maths in the activations' dtype, the add inside the GEMM.

Why: peft keeps adapters in fp32 (good: fp32 master weights and AdamW state) and so computes them in fp32:
every adapted linear casts its bf16 input to a new fp32 copy (kept for backward: ~34 GB at 6k tokens on
Llama-3.1-8B), runs two fp32 GEMMs on CUDA cores instead of tensor cores, scales the (tokens x out) result in
a separate pass and adds it in another. On W1 the profile put ~45% of the GPU time there (bench/results/).

What we do instead, for the plain case (one active adapter, no DoRA, not merged): cast the two small adapter
matrices to the input's dtype (autograd carries their gradients back to the fp32 masters, so the optimizer
and its state are unchanged), compute h = dropout(x) @ A^T (tokens x r), and add s * h @ B^T into the base
layer's output in place with one `addmm_` (cuBLAS accumulates into C: no scaled copy, no separate add). The
input is flattened to 2-D first so that output is not a view (autograd would clone the whole gradient of an
in-place op on a view in backward: 10% of W1's GPU time before this was found):

    y = x W^T  (+ b);   y += (alpha / r) * (dropout(x) A^T) B^T

The maths is peft's, with the adapter product rounded to bf16 instead of fp32 (the loss test in bench/ checks
the curve). QLoRA's `Linear4bit` gets the same forward: bitsandbytes' 4-bit matmul dequantizes the NF4 weight
to bf16 and returns a fresh output, which the adapter is added into (peft clones it first, a copy we skip).
Anything else — DoRA, several or mixed adapters, merged or disabled adapters — goes to peft's own forward
unchanged.
"""

from __future__ import annotations

from types import MethodType


def use_fast_lora_forward(model) -> int:
    """Bind the fast forward to every peft `lora.Linear` (bf16 base) and `lora.Linear4bit` (QLoRA's NF4 base)
    of `model`; returns how many layers got it."""
    from peft.tuners.lora import Linear as LoraLinear

    kinds: tuple[type, ...] = (LoraLinear,)
    try:
        from peft.tuners.lora.bnb import Linear4bit

        kinds += (Linear4bit,)
    except ImportError:  # no bitsandbytes: no 4-bit layers to find either
        pass
    n = 0
    for module in model.modules():
        if type(module) in kinds:
            module.forward = MethodType(_forward, module)
            n += 1
    return n


def _forward(self, x, *args, **kwargs):
    adapters = self.active_adapters
    plain = (not self.disable_adapters and not self.merged and kwargs.get("adapter_names") is None
             and len(adapters) == 1 and adapters[0] in self.lora_A and adapters[0] not in self.lora_variant)
    if not plain:
        return type(self).forward(self, x, *args, **kwargs)
    name = adapters[0]
    lead = x.shape[:-1]
    x = x.reshape(-1, x.shape[-1])  # 2-D in, so the base output is a tensor of its own, not a view:
    result = self.base_layer(x, *args, **kwargs)  # an in-place op on a view costs autograd a full copy
    dtype = result.dtype
    a = self.lora_A[name].weight.to(dtype)
    b = self.lora_B[name].weight.to(dtype)
    h = self.lora_dropout[name](x).to(dtype) @ a.t()
    result.addmm_(h, b.t(), alpha=self.scaling[name])
    return result.view(*lead, result.shape[-1])
