"""Loading the base model and tokenizer, and making the right parameters trainable (spec.method).

Loading goes through `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` for a local
directory and a hub id alike, so the tiny model the tests create exercises the same path as Llama-3.1-8B.
Adapters come from peft (LoraConfig, DoRA via `use_dora`); we only add what peft lacks: an error that names
the spec field when target modules match nothing, listing the module names that exist.
"""

from __future__ import annotations

import os
from typing import Any

from finetune_api.trainer_config import TrainerConfig

from .errors import ModelLoadError, TrainerInputError


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


def resolve_attn(cfg: TrainerConfig) -> str:
    """spec.model.attnImplementation; `auto` is SDPA, which every device here supports."""
    name = cfg.job.spec.model.attn_implementation
    return "sdpa" if name == "auto" else name


def load_model(cfg: TrainerConfig):
    """The base causal LM of spec.model in the resolved dtype and attention kernel.

    Raises:
        ModelLoadError: missing files, unknown architecture, or remote code needed but not trusted.
    """
    from transformers import AutoModelForCausalLM

    src, kw = _source(cfg)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src, dtype=resolve_dtype(cfg), attn_implementation=resolve_attn(cfg), **kw
        )
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{_where(cfg)}: cannot load the model: {str(e).splitlines()[0]}") from None
    model.config.use_cache = False
    return model


def linear_module_names(model) -> list[str]:
    """Distinct last-component names of the linear layers (candidates for LoRA target modules)."""
    import torch

    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    return sorted(names)


def apply_method(model, cfg: TrainerConfig):
    """Make the parameters spec.method says train trainable, the others frozen.

    Returns:
        The model to train (a peft model for lora).

    Raises:
        TrainerInputError: LoRA target modules that match nothing in the model.
    """
    spec = cfg.job.spec
    if spec.method.type == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    lora = spec.lora
    if lora.target_modules != "all-linear":
        present = linear_module_names(model)
        missing = [t for t in lora.target_modules if t not in present]
        if missing:
            raise TrainerInputError(
                f"spec.method.lora.targetModules: {missing} match no linear layer of the model; "
                f"its linear layers are: {present}"
            )
    peft_cfg = LoraConfig(
        r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        use_dora=lora.use_dora, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def enable_checkpointing(model, wanted: bool) -> None:
    """Turn activation checkpointing on (non-reentrant, so frozen inputs still get gradients)."""
    if not wanted:
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
