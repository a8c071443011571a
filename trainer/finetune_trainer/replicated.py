"""One process, or DDP: every rank holds the whole model; gradients are all-reduced by DDP.

Checkpoints are written by rank 0 alone (every rank holds the same state): the trainable weights as one
safetensors file, optimizer and scheduler state as one torch file — readable with `safetensors` and resumable
on any number of processes.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"


class Replicated:
    """The Strategy (strategy.py) for one process or DDP."""

    sharded = False

    def __init__(self, model, d, device_kind: str):
        self.model = model
        self.forward_model = model
        self.d = d
        if d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.forward_model = DDP(model, device_ids=[d.local_rank] if device_kind == "cuda" else None)

    def trainable(self) -> list:
        return [p for p in self.model.parameters() if p.requires_grad]

    def setup_optimizer(self, make_optimizer, make_scheduler) -> None:
        self.optimizer = make_optimizer(self.trainable())
        self.scheduler = make_scheduler(self.optimizer)

    def accumulating(self, last: bool):
        """Skip DDP's all-reduce on all but the last micro-batch of a step."""
        if self.d.world > 1 and not last:
            return self.forward_model.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss, last: bool) -> None:
        loss.backward()

    def step(self, max_norm: float, guard) -> float:
        import torch

        norm = float(torch.nn.utils.clip_grad_norm_(self.trainable(), max_norm if max_norm > 0 else float("inf")))
        guard(norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def write_checkpoint(self, folder: Path, rank: int) -> None:
        import torch
        from safetensors.torch import save_file

        if rank != 0:
            return
        save_file(self.gather_trainable(), folder / WEIGHTS)
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   folder / OPTIMIZER)

    def read_checkpoint(self, folder: Path, rank: int) -> None:
        import torch
        from safetensors.torch import load_file

        from .checkpoint import CheckpointMismatch

        if not (folder / WEIGHTS).exists():
            raise CheckpointMismatch(f"{folder}: written by a sharded strategy (no {WEIGHTS}); resume with "
                                     "spec.distributed.strategy as it was, or delete the checkpoints to start over")
        weights = load_file(folder / WEIGHTS)
        params = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        if set(weights) != set(params):
            raise CheckpointMismatch(f"{folder}: its trainable parameters do not match this model and method "
                                     f"(e.g. {sorted(set(weights) ^ set(params))[:2]})")
        with torch.no_grad():
            for n, t in weights.items():
                if params[n].shape != t.shape:
                    raise CheckpointMismatch(f"{folder}: {n} has shape {tuple(t.shape)} in the checkpoint, "
                                             f"{tuple(params[n].shape)} here")
                params[n].copy_(t)
        blob = torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=False)
        self.optimizer.load_state_dict(blob["optimizer"])
        self.scheduler.load_state_dict(blob["scheduler"])

    def gather_trainable(self) -> dict:
        if self.d.rank != 0:
            return {}
        return {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}

    def full_weights(self, dtype) -> Iterator[tuple[str, Optional[object]]]:
        from .strategy import tied_names

        skip = tied_names(self.model)
        for name, t in self.model.state_dict().items():
            if name in skip:
                continue
            yield name, t.detach().to("cpu", dtype if t.is_floating_point() else t.dtype) if self.d.rank == 0 \
                else None
