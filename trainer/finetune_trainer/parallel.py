"""How the model's state is spread over the processes: one class per strategy, the same five verbs each.

The recipe calls `wrap`, `accumulating`, `backward`, `step`, `gather_trainable`/`load_trainable` and never asks
which strategy runs. Single and DDP keep a full replica; FSDP2 (`torch.distributed.fsdp.fully_shard`) shards
parameters, gradients and optimizer state per decoder layer; DeepSpeed ZeRO-2/3 lives in deepspeed_engine.py
(GPU only). Why not accelerate's `Accelerator`: it would build these same wrappers, but hides the two things our
loop must own — the exact token normalisation across accumulation and ranks, and a checkpoint format that is
the same safetensors file whatever the strategy — and FSDP2 itself is ten lines here.

Checkpoints under FSDP2 gather the *full* trainable state (weights and optimizer, via
`torch.distributed.checkpoint.state_dict` with `full_state_dict=True, cpu_offload=True`) onto rank 0, rather
than writing a sharded `torch.distributed.checkpoint` directory: the checkpoint then has one format for every
strategy and world size (resume a 2-GPU FSDP run on 4 GPUs, or inspect it with safetensors), at the cost of
rank 0's host memory holding the trainable state once — fine up to the 8B-full class on one node.
"""

from __future__ import annotations

import contextlib
from typing import Any


class _Steps:
    """The verbs every strategy shares once its model is wrapped: optimizer set-up, backward, step, checkpoints."""

    def setup_optimizer(self, make_optimizer, make_scheduler) -> None:
        """Build the optimizer over the (wrapped) trainable parameters, and its LR schedule."""
        self.optimizer = make_optimizer(self.trainable())
        self.scheduler = make_scheduler(self.optimizer)

    def backward(self, loss, last: bool) -> None:
        """Accumulate the gradient of `loss` (already scaled for averaging over ranks)."""
        loss.backward()

    def step(self, max_norm: float) -> float:
        """Clip (0: measure only), optimizer and scheduler step, zero grads; returns the pre-clip grad norm."""
        norm = self.clip(max_norm if max_norm > 0 else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, out, step: int, train_state: dict, keep_last: int, rank: int, barrier) -> None:
        """Write checkpoint `step` (collective: every rank calls it; rank 0 writes the shared files)."""
        from . import checkpoint as ckpt

        weights = self.gather_trainable()
        opt = self.gather_optimizer(self.optimizer)
        ckpt.save_checkpoint(out, step, self.model, self.optimizer, self.scheduler, train_state, keep_last,
                             rank=rank, barrier=barrier, weights=weights, optimizer_state=opt)

    def load(self, path, rank: int) -> dict:
        """Restore checkpoint `path`; returns its train state."""
        from . import checkpoint as ckpt

        return ckpt.load_checkpoint(path, self.model, self.optimizer, self.scheduler, rank=rank, strategy=self)

    def trainable(self) -> list:
        """The parameters the optimizer updates."""
        return [p for p in self.model.parameters() if p.requires_grad]


class Replicated(_Steps):
    """One process, or DDP: every rank holds the whole model; gradients are all-reduced by DDP."""

    sharded = False

    def __init__(self, model, d, device_kind: str):
        self.model = model
        self.forward_model = model
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward_model = DDP(model, device_ids=[d.local_rank] if device_kind == "cuda" else None)
        self.world = d.world

    def accumulating(self, last: bool):
        """Context for one micro-batch: skip DDP's all-reduce on all but the last."""
        if self.world > 1 and not last:
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def clip(self, max_norm: float) -> float:
        """Clip gradients to `max_norm` (inf: measure only); returns the global norm before clipping."""
        import torch

        return float(torch.nn.utils.clip_grad_norm_(self.trainable(), max_norm))

    def gather_trainable(self) -> dict:
        """name -> full CPU tensor of every trainable parameter (on every rank)."""
        return {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}

    def gather_optimizer(self, optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer(self, optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def load_trainable(self, weights: dict) -> None:
        """Copy full tensors into the trainable parameters."""
        import torch

        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)

    def full_state_dict(self) -> dict | None:
        """The model's whole state dict for saving (None: save the model object as it is)."""
        return None


class Fsdp2(_Steps):
    """FSDP2: `fully_shard` on every decoder layer, then on the transformers model (the root).

    The root is the transformers model, not peft's wrapper, so `generate` (which peft forwards to the base
    model) still passes through the root's hooks. On GPUs, weights stay fp32 (the sharded master copy) and
    compute in bf16 via `MixedPrecisionPolicy`, gradients reduced in fp32. `reshard_after_forward=False` is
    ZeRO-2-like "shard grad op" (faster, more memory); the planner chooses it when the unsharded layer fits.
    """

    sharded = True

    def __init__(self, model, d, device_kind: str, *, compute_dtype=None, reshard_after_forward: bool = True,
                 cpu_offload: bool = False):
        import torch
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        self.model = model
        self.forward_model = model
        root = model.get_base_model() if hasattr(model, "get_base_model") else model
        mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if compute_dtype \
            else MixedPrecisionPolicy()
        kw: dict[str, Any] = {"mp_policy": mp, "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy()}
        for block in decoder_layers(root):
            fully_shard(block, reshard_after_forward=reshard_after_forward, **kw)
        fully_shard(root, reshard_after_forward=reshard_after_forward, **kw)
        self.root = root

    def accumulating(self, last: bool):
        """Reduce-scatter gradients only on the last micro-batch of a step."""
        self.root.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def clip(self, max_norm: float) -> float:
        import torch

        norm = torch.nn.utils.clip_grad_norm_(self.trainable(), max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def _options(self, **kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kw)

    def gather_trainable(self) -> dict:
        """Full trainable tensors on rank 0 ({} elsewhere); a collective: every rank calls it."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        sd = get_model_state_dict(self.model, options=self._options(cpu_offload=True))
        return {n: t.contiguous() for n, t in sd.items() if n in names}

    def gather_optimizer(self, optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.model, optimizer, options=self._options(cpu_offload=True))

    def load_optimizer(self, optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.model, optimizer, state, options=self._options(broadcast_from_rank0=True))

    def load_trainable(self, weights: dict) -> None:
        """Every rank passes the full tensors (rank 0's are broadcast); frozen parameters are left as loaded."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(self.model, weights, options=self._options(broadcast_from_rank0=True, strict=False))

    def full_state_dict(self) -> dict:
        """The whole model's full state dict on rank 0 (for save_pretrained); a collective."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(self.model, options=self._options(cpu_offload=True))


def decoder_layers(model) -> list:
    """The repeated blocks of a transformers causal LM (what FSDP2 shards one by one)."""
    import torch

    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and type(mod[0]).__name__.endswith("DecoderLayer"):
            return list(mod)
    raise ValueError(f"{type(model).__name__}: no ModuleList of *DecoderLayer found to shard")


def wrap(model, cfg, d, *, compute_dtype=None):
    """The strategy object for `cfg.strategy` around `model` (already on its device), as cfg.plan says.

    Args:
        compute_dtype: FSDP2's bf16 compute over fp32 master weights (None: compute in the weights' dtype).

    Raises:
        EnvironmentProblem: a DeepSpeed strategy without deepspeed installed.
    """
    if cfg.strategy in ("single", "ddp"):
        return Replicated(model, d, cfg.device)
    if cfg.strategy == "fsdp":
        return Fsdp2(model, d, cfg.device, compute_dtype=compute_dtype,
                     reshard_after_forward=cfg.plan.reshard_after_forward,
                     cpu_offload=cfg.job.spec.distributed.cpu_offload)
    from .deepspeed_engine import DeepSpeedZero

    return DeepSpeedZero(model, cfg, d)
