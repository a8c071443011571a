"""A QLoRA base with random NF4 weights, quantised layer by layer on the GPU (benchmarks only).

Why: measuring QLoRA on a 70B architecture needs its 4-bit base, and transformers quantises only while loading a
checkpoint — 141 GB of bf16 weights, which the benchmark machine's disk cannot hold. With
`FINETUNE_RANDOM_WEIGHTS=1` (sharded_load.RANDOM_ENV; never set by a spec or the operator), the architecture is
built on the meta device, its linear layers replaced by bitsandbytes' `Linear4bit` exactly as transformers does
at load (`replace_with_bnb_linear`, the same quantisation config), and each one filled with N(0, 0.02) bf16
weights generated on the GPU and quantised there, one layer at a time; the other parameters (embeddings, norms,
LM head) are random bf16. Throughput and memory do not depend on the weights' values.
"""

from __future__ import annotations

from finetune_api.trainer_config import TrainerConfig


def build(cfg: TrainerConfig, local_rank: int = 0):
    """The random 4-bit model of spec.model's architecture on GPU `local_rank`."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    from .modeling import _source, apply_kernels, quantization_config, resolve_attn
    from .sharded_load import _rebuild_buffers

    device = torch.device("cuda", local_rank)
    src, kw = _source(cfg)
    config = AutoConfig.from_pretrained(src, **kw)
    quant = quantization_config(cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=resolve_attn(cfg))
    model = replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
    std = getattr(config, "initializer_range", 0.02)
    gen = torch.Generator(device=device).manual_seed(cfg.job.spec.training.seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                w = torch.randn(module.out_features, module.in_features, generator=gen, device=device,
                                dtype=torch.bfloat16) * std
                module.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=quant.bnb_4bit_quant_type,
                                                  compress_statistics=quant.bnb_4bit_use_double_quant,
                                                  quant_storage=quant.bnb_4bit_quant_storage).to(device)
                if module.bias is not None:
                    module.bias = torch.nn.Parameter(torch.zeros(module.out_features, dtype=torch.bfloat16,
                                                                 device=device), requires_grad=False)
                continue
            for name, p in list(module.named_parameters(recurse=False)):
                if p.device.type != "meta":
                    continue
                if p.dim() == 1:
                    value = torch.ones(p.shape, dtype=torch.bfloat16, device=device)
                else:
                    value = torch.randn(p.shape, generator=gen, device=device, dtype=torch.bfloat16) * std
                setattr(module, name, torch.nn.Parameter(value, requires_grad=False))
    _rebuild_buffers(model, device)
    model.tie_weights()
    model.is_loaded_in_4bit = True  # what peft reads to wrap Linear4bit layers with its 4-bit LoRA
    model.is_quantized = True
    model.config.use_cache = False
    apply_kernels(model, cfg)
    return model
