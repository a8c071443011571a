"""How the model's state is spread over the processes: the `Strategy` interface every strategy implements.

The recipes call only these members and never ask which strategy runs. Replicated (one process, DDP) keeps a
full replica per rank (replicated.py); FSDP2 shards parameters, gradients and optimizer state per decoder layer
(fsdp.py); DeepSpeed ZeRO-2/3 (deepspeed_engine.py, GPU only). Why not accelerate's `Accelerator`: it would
build these same wrappers, but hides what our loop must own — the exact token normalisation across
accumulation and ranks, checkpoints that are atomic and checksummed with one writer for every strategy
(checkpoint.write), and outputs streamed to disk without one rank holding the whole model.

Every method marked "collective" must be called by all ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional, Protocol


class Strategy(Protocol):
    """What a recipe needs from a strategy."""

    sharded: bool  # parameters are split over ranks (FSDP, ZeRO-3): every rank must join every forward
    forward_model: Any  # what the recipe calls for a forward pass (DDP / DeepSpeed wrapper or the model)

    def setup_optimizer(self, make_optimizer: Callable, make_scheduler: Callable) -> None:
        """Build the optimizer over the trainable parameters and its LR schedule."""

    def accumulating(self, last: bool) -> ContextManager:
        """Context of one micro-batch: gradient sync only on the last of a step."""

    def backward(self, loss, last: bool) -> None:
        """Accumulate the gradient of `loss` (already normalised for the whole step)."""

    def step(self, max_norm: float, guard: Callable[[float], None]) -> float:
        """Clip to `max_norm` (0: measure only), call `guard(norm)` — which raises on a non-finite norm — before
        the update where the strategy can, then optimizer and scheduler step; returns the pre-clip norm."""

    def lr(self) -> float:
        """The current learning rate."""

    def write_checkpoint(self, folder: Path, rank: int) -> None:
        """Write this rank's share of weights and optimizer state into `folder` (collective)."""

    def read_checkpoint(self, folder: Path, rank: int) -> None:
        """Restore weights, optimizer and scheduler from `folder` (collective)."""

    def gather_trainable(self) -> dict:
        """name -> full CPU tensor of every trainable parameter on rank 0, {} elsewhere (collective)."""

    def full_weights(self, dtype) -> Iterator[tuple[str, Optional[Any]]]:
        """Every parameter and buffer of the model, one at a time, as a full CPU tensor in `dtype` on rank 0
        (None elsewhere), so the output can be streamed to disk without one rank holding the model (collective)."""


def wrap(model, cfg, d, *, compute_dtype=None) -> Strategy:
    """The strategy object for `cfg.strategy` around `model` (already on its device), as cfg.plan says.

    Args:
        compute_dtype: FSDP2's bf16 compute over fp32 master weights (None: compute in the weights' dtype).

    Raises:
        EnvironmentProblem: a DeepSpeed strategy without deepspeed installed.
    """
    if cfg.strategy in ("single", "ddp"):
        from .replicated import Replicated

        return Replicated(model, d, cfg.device)
    if cfg.strategy == "fsdp":
        from .fsdp import Fsdp2

        return Fsdp2(model, d, cfg.device, compute_dtype=compute_dtype,
                     reshard_after_forward=cfg.plan.reshard_after_forward,
                     cpu_offload=cfg.job.spec.distributed.cpu_offload)
    from .deepspeed_engine import DeepSpeedZero

    return DeepSpeedZero(model, cfg, d)


def decoder_layers(model) -> list:
    """The repeated blocks of a transformers causal LM (what FSDP2 shards one by one)."""
    import torch

    for _, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0 and type(mod[0]).__name__.endswith("DecoderLayer"):
            return list(mod)
    raise ValueError(f"{type(model).__name__}: no ModuleList of *DecoderLayer found to shard")


def tied_names(model) -> set[str]:
    """Parameter names that are views of another (e.g. lm_head.weight tied to the embeddings): not saved twice."""
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        key = id(p)
        if key in seen:
            tied.add(name)
        else:
            seen[key] = name
    return tied
