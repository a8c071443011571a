"""Loading the base model and tokenizer, and making the right parameters trainable (spec.method).

Loading goes through `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` for a local
directory and a hub id alike, so the tiny model the tests create exercises the same path as Llama-3.1-8B.
Adapters come from peft (LoraConfig, DoRA via `use_dora`; QLoRA = a bitsandbytes NF4 base + the same
adapters); Spectrum's selection is spectrum.py's. We only add what the libraries lack: an error that names the
spec field when target modules match nothing — checked on a meta-device copy of the architecture before
any weight loads — and the dtype policy (fp32 master weights + bf16 autocast for full/Spectrum on GPUs).
"""

from __future__ import annotations

import os
from typing import Any

from finetune_api.trainer_config import TrainerConfig

from .errors import EnvironmentProblem, ModelLoadError, TrainerInputError


def _source(cfg: TrainerConfig) -> tuple[str, dict]:
    m = cfg.job.spec.model
    kw: dict[str, Any] = {"trust_remote_code": m.trust_remote_code}
    if m.hub_id:
        kw["revision"] = m.revision
        if os.environ.get("HF_TOKEN"):
            kw["token"] = os.environ["HF_TOKEN"]
        return m.hub_id, kw
    assert cfg.model_path is not None
    return cfg.model_path, kw


def _where(cfg: TrainerConfig) -> str:
    m = cfg.job.spec.model
    return f"spec.model.hubId '{m.hub_id}'" if m.hub_id else f"spec.model.path '{cfg.model_path}'"


def load_tokenizer(cfg: TrainerConfig):
    """The tokenizer of spec.model, with a pad token (the EOS token when it has none).

    Raises:
        ModelLoadError: nothing loadable at spec.model.
    """
    from transformers import AutoTokenizer

    src, kw = _source(cfg)
    if cfg.model_path and not os.path.isdir(cfg.model_path):
        raise ModelLoadError(f"{_where(cfg)}: no such directory")
    try:
        tok = AutoTokenizer.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{_where(cfg)}: cannot load a tokenizer: {str(e).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_dtype(cfg: TrainerConfig):
    """spec.model.dtype as a torch dtype; `auto` is bfloat16 on GPUs that have it, float32 on CPU."""
    import torch

    name = cfg.job.spec.model.dtype
    if name == "auto":
        if cfg.device == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def uses_padding_free(cfg: TrainerConfig) -> bool:
    """Whether training micro-batches are unpacked examples concatenated into one row (spec.dataset.paddingFree):
    on GPUs, unless the data is packed already or is preference pairs. Not on the CPU: there SDPA would
    materialise a (tokens x tokens) per-example mask, slower than the padding it saves (CPU micro-batches
    default to one example anyway)."""
    ds = cfg.job.spec.dataset
    return (cfg.device == "cuda" and ds.padding_free and not ds.packing
            and not cfg.job.spec.objective.is_preference)


def resolve_attn(cfg: TrainerConfig) -> str:
    """spec.model.attnImplementation; `auto` is PyTorch's varlen flash attention for packed or padding-free rows
    on a GPU (attention.py), else SDPA, which every device here supports."""
    name = cfg.job.spec.model.attn_implementation
    if name != "auto":
        return name
    from . import attention

    if cfg.device == "cuda" and (cfg.job.spec.dataset.packing or uses_padding_free(cfg)) and attention.available():
        attention.register()
        return attention.NAME
    return "sdpa"


def weights_dtype(cfg: TrainerConfig):
    """The dtype the weights are *stored* in while training.

    Full fine-tuning and Spectrum on a GPU keep fp32 master weights (so AdamW's state is fp32 too) and
    compute in bf16 under autocast (`compute_dtype`): bf16 mixed precision with fp32 optimizer state. Frozen
    bases (LoRA) are stored in the compute dtype itself, since nothing updates them.
    """
    import torch

    dtype = resolve_dtype(cfg)
    if cfg.strategy.startswith("deepspeed"):  # DeepSpeed's bf16 mode keeps the fp32 master copy itself
        return dtype
    if cfg.device == "cuda" and cfg.job.spec.method.trains_base_weights and dtype == torch.bfloat16:
        return torch.float32
    return dtype


def autocast_dtype(cfg: TrainerConfig):
    """The dtype to autocast the forward pass to, or None when weights are already in the compute dtype."""
    import torch

    if weights_dtype(cfg) == torch.float32 and resolve_dtype(cfg) != torch.float32:
        return resolve_dtype(cfg)
    return None


def bf16_compute_weights(cfg: TrainerConfig) -> bool:
    """Whether the forward runs on half-precision weights (not fp32 ones under autocast).

    True for LoRA/QLoRA (frozen bf16 base; QLoRA's 4-bit linears dequantize to bf16), for FSDP2 (its
    MixedPrecisionPolicy computes on bf16 copies of the fp32 masters) and DeepSpeed (bf16 weights): the
    cases where Liger's kernels see the dtype they were measured with. False under autocast, where the
    residual stream stays fp32.
    """
    return autocast_dtype(cfg) is None or cfg.strategy == "fsdp"


def quantization_config(cfg: TrainerConfig):
    """QLoRA's bitsandbytes config: NF4 weights, double quantisation, bf16 compute (None unless qlora).

    Raises:
        EnvironmentProblem: bitsandbytes is not installed.
    """
    if cfg.job.spec.method.type != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise EnvironmentProblem("spec.method.type qlora needs bitsandbytes: pip install bitsandbytes") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)


def load_model(cfg: TrainerConfig, local_rank: int = 0):
    """The base causal LM of spec.model in the resolved dtype and attention kernel (4-bit NF4 for qlora).

    Raises:
        ModelLoadError: missing files, unknown architecture, or remote code needed but not trusted.
    """
    from transformers import AutoModelForCausalLM

    src, kw = _source(cfg)
    quant = quantization_config(cfg)
    from .sharded_load import random_weights

    if quant is not None and random_weights():  # benchmarks: a 4-bit base too large for the disk (random_qlora.py)
        from . import random_qlora

        return random_qlora.build(cfg, local_rank)
    if quant is not None:
        kw["quantization_config"] = quant
        kw["device_map"] = {"": local_rank}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=weights_dtype(cfg), attn_implementation=resolve_attn(cfg), **kw
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{_where(cfg)}: cannot load the model: {str(e).splitlines()[0]}") from None
    model.config.use_cache = False
    apply_kernels(model, cfg)
    # QLoRA: the non-quantized parameters (embeddings, norms, LM head) stay in bf16 and frozen. peft's
    # prepare_model_for_kbit_training would upcast them to fp32 — 2 GiB more on Llama-3.1-8B, an fp32 LM head
    # GEMM, fp32 residual stream — for nothing the norms need (RMSNorm computes in fp32 inside either way).
    return model


def model_config(cfg: TrainerConfig) -> dict:
    """spec.model's config.json as a dict (local directory, or the hub through transformers' cache).

    Raises:
        ModelLoadError: no config.json at spec.model.path.
    """
    import json
    from pathlib import Path

    if cfg.model_path:
        f = Path(cfg.model_path) / "config.json"
        if not f.is_file():
            raise ModelLoadError(f"spec.model.path '{cfg.model_path}': no config.json")
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"spec.model.path '{cfg.model_path}': its config.json is not JSON ({e})") from None
        if not isinstance(doc, dict):
            raise ModelLoadError(f"spec.model.path '{cfg.model_path}': its config.json is not a JSON object")
        return doc
    from transformers import AutoConfig

    src, kw = _source(cfg)
    return AutoConfig.from_pretrained(src, **kw).to_dict()


def apply_kernels(model, cfg: TrainerConfig) -> None:
    """Liger's fused norm/RoPE/SwiGLU/LM-head+loss kernels, where the forward runs on bf16 weights on a GPU and
    liger-kernel is installed (bench/results/ has the gains)."""
    if cfg.device == "cuda" and bf16_compute_weights(cfg):
        from . import liger

        liger.apply_liger(model, fused_loss=cfg.strategy != "deepspeed-zero3")


def linear_module_names(model) -> list[str]:
    """Distinct last-component names of the linear layers (candidates for LoRA target modules)."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def meta_model(cfg: TrainerConfig, **kw_model):
    """The architecture of spec.model on the meta device: module names and shapes, no weights loaded.

    Args:
        kw_model: for `from_config` (e.g. the training `dtype` and `attn_implementation`).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    src, kw = _source(cfg)
    try:
        config = AutoConfig.from_pretrained(src, **kw)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{_where(cfg)}: cannot load the model config: {str(e).splitlines()[0]}") from None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=kw["trust_remote_code"], **kw_model)


def check_targets(model, cfg: TrainerConfig) -> None:
    """Raise unless every LoRA target module names a linear layer of `model` (meta or real), and the rank is low.

    Raises:
        TrainerInputError: names the field, the missing names and the ones that exist; or a rank larger than a
            targeted layer allows.
    """
    import torch

    from .capabilities import check_lora_rank

    spec = cfg.job.spec
    if not spec.method.is_adapter:
        return
    shapes: dict[str, tuple[int, int]] = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"):
            shapes.setdefault(n.rsplit(".", 1)[-1], (m.in_features, m.out_features))
    check_lora_rank(cfg, shapes)
    if spec.lora.target_modules == "all-linear":
        return
    present = linear_module_names(model)
    missing = [t for t in spec.lora.target_modules if t not in present]
    if missing:
        raise TrainerInputError(
            f"spec.method.lora.targetModules: {missing} match no linear layer of the model; "
            f"its linear layers are: {present}"
        )


def apply_method(model, cfg: TrainerConfig, *, rank: int = 0, world: int = 1, all_sum=None):
    """Make the parameters spec.method says train trainable, the others frozen.

    Args:
        model: the loaded base model.
        cfg: the trainer config.
        rank, world, all_sum: for Spectrum's scan, shared over the processes (see spectrum.scan_model).

    Returns:
        (model to train — a peft model for lora/qlora —, Spectrum's scan report or None).

    Raises:
        TrainerInputError: LoRA target modules that match nothing in the model.
    """
    spec = cfg.job.spec
    if spec.method.type == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model, None
    if spec.method.type == "spectrum":
        from .spectrum import apply_spectrum, scan_report

        fraction = spec.spectrum.fraction
        scan = apply_spectrum(model, fraction, rank=rank, world=world, all_sum=all_sum)
        return model, scan_report(scan, fraction)
    from peft import LoraConfig, get_peft_model

    lora = spec.lora
    check_targets(model, cfg)
    peft_cfg = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        use_dora=lora.use_dora, task_type="CAUSAL_LM",
    )
    from . import lora_forward

    model = get_peft_model(model, peft_cfg)
    _seed_adapters(model, spec.training.seed)
    model._finetune_fast_lora_layers = lora_forward.use_fast_lora_forward(model)  # adapter add fused into the GEMM
    return model, None


def _seed_adapters(model, seed: int) -> None:
    """Adapters start from sharded_load.adapter_init: the same values whether the base loads whole or in shards."""
    import torch

    from .sharded_load import adapter_init

    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("lora_A" in name or "lora_B" in name) and p.device.type != "meta":
                p.copy_(adapter_init(name, tuple(p.shape), seed).to(p.dtype))


def enable_checkpointing(model, wanted: bool, layers: int | None = None) -> int:
    """Turn activation checkpointing on (non-reentrant, so frozen inputs still get gradients).

    Args:
        layers: checkpoint only the first this many decoder blocks (the memory plan's choice: the rest keep
            their activations and are not recomputed); None: all of them.

    Returns:
        How many blocks are checkpointed.
    """
    if not wanted:
        return 0
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    from .strategy import decoder_layers

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = decoder_layers(base)
    for i, block in enumerate(blocks):  # transformers' GradientCheckpointingLayer reads this flag per call
        block.gradient_checkpointing = layers is None or i < layers
    return len(blocks) if layers is None else min(layers, len(blocks))
