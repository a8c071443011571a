"""Loading a model straight into its FSDP2 shards: no process ever holds the whole model.

Why: the plain path loads the full model in every process (host memory: world x the model) and moves it whole to
the GPU before `fully_shard` splits it. For Llama-3.1-70B in bf16 (141 GB) on a 2xH200 node that is 282 GB of
host memory and 141 GB on one 141 GB GPU: it cannot work. Here, as torchtitan and torchtune do, the model (and its
LoRA adapters) is built on the meta device, sharded, allocated shard by shard (`to_empty`), and each rank reads
only its own rows of every tensor from the safetensors files (`safe_open(...).get_slice`, memory-mapped), so a
rank reads and holds 1/world of the weights. Adapters are initialised as peft does (A: Kaiming-uniform, B: zero)
but from a seed per parameter name (`adapter_init`, which the plain path uses too), so a run's adapters start
the same however the model was loaded; non-persistent buffers (rotary frequencies) are rebuilt from the config.

`FINETUNE_RANDOM_WEIGHTS=1` (benchmarks only, like bench/workloads.py's random models) fills the shards with
random weights instead of reading files, so a 70B architecture can be measured on a machine whose disk cannot
hold its 141 GB of weights; a model folder then needs only config.json and a tokenizer.

Used for `strategy: fsdp` with LoRA (not DoRA) and full fine-tuning, for the architectures whose only computed
buffers are rotary frequencies (`ARCHITECTURES`), when the model's weights are safetensors; everything else
(QLoRA's 4-bit quantisation at load, Spectrum's scan of the loaded weights, DoRA's magnitudes from the base
weights, .bin checkpoints, other architectures) loads the plain way.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

from finetune_api.trainer_config import TrainerConfig

from .errors import ModelLoadError

RANDOM_ENV = "FINETUNE_RANDOM_WEIGHTS"
ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
_PEFT_PREFIX = "base_model.model."


def shard_offsets_available() -> bool:
    """Whether this torch has the (private) DTensor helper that says which rows a rank holds.

    `torch.distributed.tensor._utils.compute_local_shape_and_global_offset`: private, checked on torch 2.11; where
    it is missing, FSDP runs load the plain way (tests/unit/trainer/test_sharded_load.py fails, to say so)."""
    try:
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset  # noqa: F401
    except ImportError:
        return False
    return True


def random_weights() -> bool:
    """Whether the benchmark-only random-weights mode is on."""
    return os.environ.get(RANDOM_ENV) == "1"


def checkpoint_files(cfg: TrainerConfig) -> Optional[dict[str, Path]]:
    """{tensor name: safetensors file} of spec.model, or None when its weights are not safetensors here."""
    from .modeling import _source

    src, kw = _source(cfg)
    root = Path(src)
    if not root.is_dir():  # a hub id: the files transformers' cache holds (downloaded when missing)
        try:
            from huggingface_hub import snapshot_download

            root = Path(snapshot_download(src, revision=kw.get("revision"), token=kw.get("token"),
                                          allow_patterns=["*.safetensors", "*.json"]))
        except Exception:  # noqa: BLE001 - no hub access: the plain path reports it with its own message
            return None
    index = root / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {k: root / v for k, v in weight_map.items()}
    single = root / "model.safetensors"
    if not single.exists():
        return None
    from safetensors import safe_open

    with safe_open(single, framework="pt") as f:
        return {k: single for k in f.keys()}


def applies(cfg: TrainerConfig) -> bool:
    """Whether this run loads into its shards (see the module docstring)."""
    spec = cfg.job.spec
    if cfg.plan.strategy != "fsdp" or spec.method.type not in ("lora", "full") or spec.lora.use_dora:
        return False
    if not shard_offsets_available():
        return False
    from .modeling import model_config

    try:
        if model_config(cfg).get("model_type") not in ARCHITECTURES:
            return False
    except (OSError, ValueError):
        return False
    return random_weights() or checkpoint_files(cfg) is not None


def build_meta(cfg: TrainerConfig):
    """spec.model's architecture on the meta device, in the training dtype and attention kernel (no weights)."""
    from .modeling import apply_kernels, meta_model, resolve_attn, weights_dtype

    model = meta_model(cfg, dtype=weights_dtype(cfg), attn_implementation=resolve_attn(cfg))
    model.config.use_cache = False
    apply_kernels(model, cfg)
    return model


def _checkpoint_key(name: str) -> str:
    """The checkpoint's name of a (peft-wrapped) parameter."""
    if name.startswith(_PEFT_PREFIX):
        name = name[len(_PEFT_PREFIX):]
    return name.replace(".base_layer.", ".")


def _rebuild_buffers(model, device) -> None:
    """Non-persistent buffers (rotary frequencies) are computed in __init__, not stored: compute them again."""
    import torch

    for module in model.modules():
        names = getattr(module, "_non_persistent_buffers_set", set())
        if not names or not hasattr(module, "config"):
            continue
        with torch.device("cpu"):
            fresh = type(module)(module.config)
        for n in names:
            buf = getattr(fresh, n, None)
            if buf is not None:
                module.register_buffer(n, buf.to(device), persistent=False)


def _local_rows(p):
    """(local tensor, global row offset, rows) of a parameter: a DTensor sharded on dim 0, or a plain tensor."""
    if hasattr(p, "to_local"):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        local = p.to_local()
        shape, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
        return local, offset[0] if offset else 0, shape[0] if shape else 0
    return p.data, 0, p.shape[0] if p.dim() else 0


def materialize(model, cfg: TrainerConfig, d) -> None:
    """Allocate the (sharded) meta model on this rank's device and fill it: checkpoint slices, or random weights.

    Raises:
        ModelLoadError: the checkpoint lacks a tensor the model has, or a shape differs.
    """
    import torch
    from safetensors import safe_open

    model.to_empty(device=d.device)
    _rebuild_buffers(model, d.device)
    files = None if random_weights() else checkpoint_files(cfg)
    handles: dict[Path, object] = {}
    std = getattr(model.config, "initializer_range", 0.02)
    gen = torch.Generator(device=d.device).manual_seed(cfg.job.spec.training.seed * 7919 + d.rank)
    with torch.no_grad():
        for name, p in model.named_parameters():
            local, start, rows = _local_rows(p)
            if "lora_A" in name or "lora_B" in name:
                full = adapter_init(name, tuple(p.shape), cfg.job.spec.training.seed)
                local[:rows].copy_(full[start:start + rows])
                continue
            if files is None:
                _init_random(name, local, std, gen)
                continue
            key = _checkpoint_key(name)
            if key not in files:
                raise ModelLoadError(f"spec.model: the checkpoint has no tensor {key!r}, which the model needs")
            f = files[key]
            if f not in handles:
                handles[f] = safe_open(f, framework="pt")
            sl = handles[f].get_slice(key)
            if list(sl.get_shape()) != list(p.shape):
                raise ModelLoadError(f"spec.model: {key} has shape {sl.get_shape()} in the checkpoint, "
                                     f"{list(p.shape)} in the model")
            if rows:
                local[:rows].copy_(sl[start:start + rows] if p.dim() else sl[:])
            elif not p.dim():
                local.copy_(sl[:])


def adapter_init(name: str, shape: tuple, seed: int):
    """A LoRA matrix's initial value, the same on every rank and for every way of loading: B zero; A
    Kaiming-uniform (a=sqrt(5), peft's) over its fan-in, from a generator seeded by the run's seed and the name."""
    import zlib

    import torch

    if "lora_B" in name:
        return torch.zeros(shape)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
    bound = math.sqrt(6.0 / ((1 + 5) * shape[1]))  # kaiming_uniform_(a=sqrt(5)): gain sqrt(2 / (1 + a^2))
    return (torch.rand(shape, generator=gen) * 2 - 1) * bound


def _init_random(name: str, local, std: float, gen) -> None:
    """Random weights for benchmarks: N(0, initializer_range) matrices, unit norms, zero biases."""
    import torch

    if local.dim() == 1:
        local.fill_(0.0 if name.endswith("bias") else 1.0)
    else:
        local.copy_(torch.randn(local.shape, generator=gen, device=local.device, dtype=local.dtype) * std)
