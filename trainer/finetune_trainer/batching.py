"""Micro-batch and gradient accumulation from spec.training (`auto` or numbers) and the process count.

The optimizer step always sees `micro x accumulation x processes` examples. Until the memory planner
(issue 5) sizes `auto` by GPU memory, `auto` micro-batches are 1 on CPU (no memory pressure worth the
padding) and 8 on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from finetune_api.training import TrainingSpec

from .errors import TrainerInputError


@dataclass(frozen=True)
class BatchPlan:
    """Batch shape of one optimizer step."""

    micro: int
    accumulation: int
    world: int

    @property
    def global_batch(self) -> int:
        """Examples (or packed rows) per optimizer step."""
        return self.micro * self.accumulation * self.world


def plan_batches(t: TrainingSpec, world: int, device: str, n_train: int) -> BatchPlan:
    """Resolve micro-batch and accumulation.

    Args:
        t: the training spec.
        world: processes in the run.
        device: "cpu" or "cuda".
        n_train: training examples (or packed rows); the step may not need more than exist.

    Raises:
        TrainerInputError: explicit numbers that contradict an explicit globalBatchSize, or too little data.
    """
    want = min(t.global_batch_size, max(n_train, 1))
    if t.micro_batch_size == "auto":
        cap = 1 if device == "cpu" else 8
        micro = max(1, min(cap, want // world))
    else:
        micro = t.micro_batch_size
    if t.gradient_accumulation == "auto":
        accumulation = max(1, want // (micro * world))
    else:
        accumulation = t.gradient_accumulation
        if t.micro_batch_size != "auto" and "global_batch_size" in t.model_fields_set \
                and micro * accumulation * world != t.global_batch_size:
            raise TrainerInputError(
                f"spec.training.globalBatchSize is {t.global_batch_size} but microBatchSize {micro} x "
                f"gradientAccumulation {accumulation} x {world} process(es) = {micro * accumulation * world}; "
                "set globalBatchSize to match, or one of the others to 'auto'"
            )
    plan = BatchPlan(micro, accumulation, world)
    if n_train < plan.global_batch:
        raise TrainerInputError(
            f"spec.dataset: {n_train} training example(s) (or packed rows) is fewer than one optimizer step "
            f"needs ({plan.global_batch} = micro {micro} x accumulation {accumulation} x {world} process(es))"
        )
    return plan
