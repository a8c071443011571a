"""FSDP2 (`torch.distributed.fsdp.fully_shard`): parameters, gradients and optimizer state sharded per decoder layer.

The root is the transformers model, not peft's wrapper, so `generate` (which peft forwards to the base model)
still passes through the root's hooks. On GPUs, weights stay fp32 (the sharded master copy) and compute in
bf16 via `MixedPrecisionPolicy`, gradients reduced in fp32. `reshard_after_forward=False` is ZeRO-2-like
"shard grad op" (faster, more memory); the launch plan chooses it when the unsharded layer fits.

Checkpoints are `torch.distributed.checkpoint` (DCP) folders: every rank writes its own shards at once, so an
8B full fine-tune's 90 GiB of fp32 weights and AdamW state is written in parallel and never gathered into one
rank's host memory; DCP reshards on load, so a run may resume on another number of processes. Frozen
parameters (a LoRA base) are left out. Outputs stream one parameter at a time (`full_weights`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Optional

DCP_FOLDER = "dcp"
SCHEDULER = "scheduler.pt"


class Fsdp2:
    """The Strategy (strategy.py) for FSDP2."""

    sharded = True

    def __init__(self, model, d, device_kind: str, *, compute_dtype=None, reshard_after_forward: bool = True,
                 cpu_offload: bool = False):
        import torch
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        from .strategy import decoder_layers

        self.model = model
        self.forward_model = model
        self.d = d
        root = model.get_base_model() if hasattr(model, "get_base_model") else model
        mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32) if compute_dtype \
            else MixedPrecisionPolicy()
        kw: dict[str, Any] = {"mp_policy": mp, "offload_policy": CPUOffloadPolicy() if cpu_offload else OffloadPolicy()}
        for block in decoder_layers(root):
            fully_shard(block, reshard_after_forward=reshard_after_forward, **kw)
        fully_shard(root, reshard_after_forward=reshard_after_forward, **kw)
        self.root = root

    def trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def setup_optimizer(self, make_optimizer, make_scheduler) -> None:
        self.optimizer = make_optimizer(self.trainable())
        self.scheduler = make_scheduler(self.optimizer)

    def accumulating(self, last: bool):
        """Reduce-scatter gradients only on the last micro-batch of a step."""
        self.root.set_requires_gradient_sync(last)
        return contextlib.nullcontext()

    def backward(self, loss, last: bool) -> None:
        loss.backward()

    def step(self, max_norm: float, guard) -> float:
        import torch

        norm = torch.nn.utils.clip_grad_norm_(self.trainable(), max_norm if max_norm > 0 else float("inf"))
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        guard(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def _state(self):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer,
                                            options=StateDictOptions(ignore_frozen_params=True))
        return {"model": model_sd, "optimizer": optim_sd}

    def write_checkpoint(self, folder: Path, rank: int) -> None:
        import torch
        import torch.distributed.checkpoint as dcp

        dcp.save(self._state(), checkpoint_id=str(folder / DCP_FOLDER))
        if rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict()}, folder / SCHEDULER)

    def read_checkpoint(self, folder: Path, rank: int) -> None:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        from .checkpoint import CheckpointMismatch

        if not (folder / DCP_FOLDER).is_dir():
            raise CheckpointMismatch(f"{folder}: not written by an FSDP run (no {DCP_FOLDER}/); resume with "
                                     "spec.distributed.strategy as it was, or delete the checkpoints to start over")
        state = self._state()
        try:
            dcp.load(state, checkpoint_id=str(folder / DCP_FOLDER))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointMismatch(f"{folder}: does not fit this model and method "
                                     f"({str(e).strip().splitlines()[0][:300]})") from None
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(ignore_frozen_params=True, strict=False))
        self.scheduler.load_state_dict(torch.load(folder / SCHEDULER, weights_only=False)["scheduler"])

    def _full(self, t, dtype):
        """A parameter or buffer as a full CPU tensor in `dtype` on rank 0 (an all-gather for DTensors)."""
        if hasattr(t, "full_tensor"):
            if t.device.type == "cpu" and self.d.device.type == "cuda":  # cpuOffload: gather over NCCL
                t = t.to(self.d.device)
            t = t.full_tensor()
        if self.d.rank != 0:
            return None
        return t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype).contiguous()

    def gather_trainable(self) -> dict:
        out = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                t = self._full(p, p.dtype)
                if t is not None:
                    out[name] = t
        return out

    def full_weights(self, dtype) -> Iterator[tuple[str, Optional[Any]]]:
        from .strategy import tied_names

        skip = tied_names(self.model)
        for name, t in self.model.state_dict().items():
            if name not in skip:
                yield name, self._full(t, dtype)
