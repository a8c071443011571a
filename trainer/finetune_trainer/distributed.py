"""Process-group set-up for the ranks torchrun starts, and the few collectives the recipe needs.

The launcher sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR; we only pick the backend (NCCL on GPUs, gloo on CPU)
and the device, and wrap the model in DDP when there is more than one process. One process does not
initialise a process group here, so `finetune run` on a laptop has no networking at all; the exception is
FSDP2 on one GPU (full fine-tuning's default there), whose `fully_shard` creates a one-rank group from
the launcher's environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int
    world: int
    local_rank: int
    device: "object"

    @property
    def main(self) -> bool:
        """True on rank 0, which writes outputs, logs and metrics."""
        return self.rank == 0


def init_distributed(device_kind: str, timeout_seconds: float = 1800) -> Dist:
    """Join the process group the launcher describes (if more than one process) and pick this rank's device.

    Args:
        timeout_seconds: how long any collective may wait for a peer (spec.distributed.timeoutSeconds); past
            it the collective raises (gloo) or NCCL's watchdog aborts the communicator, so a peer that stops
            answering becomes a failure with a message, never a hang.
    """
    import datetime

    import torch
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device_kind == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # a timed-out NCCL collective aborts
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo",
                                device_id=device if device_kind == "cuda" else None,
                                timeout=datetime.timedelta(seconds=timeout_seconds))
    return Dist(rank, world, local, device)


def all_sum(values: list[float], d: Dist) -> list[float]:
    """Element-wise sum of `values` over all ranks (identity on one process)."""
    if d.world == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op on one process)."""
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()


def shutdown(d: Dist) -> None:
    """Leave the process group after a run that succeeded on every rank (a collective: never call it after a
    failure, where a peer may never arrive). FSDP2 creates a one-rank group itself on one GPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
