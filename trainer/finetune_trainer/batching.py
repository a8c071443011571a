"""Micro-batch, accumulation, checkpointing and strategy for a run: the spec's numbers, or the memory plan's.

The optimizer step always sees `micro x accumulation x processes` examples. On a GPU, `auto` values come
from the memory planner (planner.py) fed with the model's config and this GPU's memory; on the CPU `auto`
micro-batches are 1 (no memory pressure worth the padding) and checkpointing is off.
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


def plan_batches(t: TrainingSpec, world: int, device: str, n_train: int, auto_micro: int | None = None) -> BatchPlan:
    """Resolve micro-batch and accumulation.

    Args:
        t: the training spec.
        world: processes in the run.
        device: "cpu" or "cuda".
        n_train: training examples (or packed rows); the step may not need more than exist.
        auto_micro: the planner's micro-batch, used when spec says `auto` (default: 1 on CPU, 8 on GPU).

    Raises:
        TrainerInputError: explicit numbers that contradict an explicit globalBatchSize, or too little data.
    """
    want = min(t.global_batch_size, max(n_train, 1))
    if t.micro_batch_size == "auto":
        cap = auto_micro or (1 if device == "cpu" else 8)
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


@dataclass(frozen=True)
class RunPlan:
    """Everything the recipe takes from the plan: batch shape, checkpointing and (for `auto`) the strategy."""

    batch: BatchPlan
    checkpointing: bool
    strategy: str
    reshard_after_forward: bool = True
    plan: object = None  # planner.Plan on GPUs (for the log line), None on CPU
    checkpoint_layers: int | None = None  # with checkpointing: the first this many blocks (None: all)


def memory_plan(cfg, world: int, n_train: int, gpu_bytes: int | None = None) -> RunPlan:
    """The run's plan: on GPUs from the memory planner, on the CPU from the spec with simple defaults.

    Args:
        cfg: the TrainerConfig.
        world: processes in the run.
        n_train: training examples (or packed rows).
        gpu_bytes: override this GPU's memory (default: ask CUDA).

    Raises:
        TrainerInputError: the plan does not fit (planner.DoesNotFit), or batch numbers contradict.
    """
    t = cfg.job.spec.training
    if cfg.device != "cuda":
        return RunPlan(plan_batches(t, world, cfg.device, n_train), t.gradient_checkpointing is True, cfg.strategy)
    from . import planner

    if gpu_bytes is None:
        import torch

        gpu_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    shape = planner.ModelShape.from_config(model_config(cfg))
    p = planner.choose(shape, workload(cfg, world, gpu_bytes), min(t.global_batch_size, max(n_train, 1)),
                       strategy_auto=cfg.job.spec.distributed.strategy == "auto" and world > 1,
                       micro=None if t.micro_batch_size == "auto" else t.micro_batch_size,
                       checkpointing=None if t.gradient_checkpointing == "auto" else t.gradient_checkpointing)
    strategy = cfg.strategy if cfg.job.spec.distributed.strategy != "auto" or world == 1 else \
        ("fsdp" if p.strategy.startswith("fsdp") else p.strategy)
    return RunPlan(plan_batches(t, world, cfg.device, n_train, auto_micro=p.micro), p.checkpointing, strategy,
                   p.fsdp_reshard_after_forward, p, p.checkpoint_layers or None)


def workload(cfg, world: int, gpu_bytes: int):
    """The planner's Workload for a TrainerConfig."""
    from .liger import installed
    from .planner import Workload

    spec = cfg.job.spec
    targets = spec.lora.target_modules
    strategy = cfg.strategy if cfg.strategy != "single" else "ddp"
    return Workload(method=spec.method.type, strategy=strategy, world=world, seq_len=spec.dataset.max_length,
                    gpu_bytes=gpu_bytes, lora_rank=spec.lora.rank,
                    lora_targets=None if targets == "all-linear" else tuple(targets),
                    spectrum_fraction=spec.spectrum.fraction, cpu_offload=spec.distributed.cpu_offload,
                    rows_per_example=2 if spec.objective.type in ("dpo", "orpo") else 1,
                    fused_kernels=installed())


def model_config(cfg) -> dict:
    """spec.model's config.json as a dict (local directory, or the hub through transformers' cache)."""
    import json
    from pathlib import Path

    if cfg.model_path:
        f = Path(cfg.model_path) / "config.json"
        if not f.exists():
            from .errors import ModelLoadError

            raise ModelLoadError(f"spec.model.path '{cfg.model_path}': no config.json")
        return json.loads(f.read_text(encoding="utf-8"))
    from transformers import AutoConfig

    m = cfg.job.spec.model
    return AutoConfig.from_pretrained(m.hub_id, revision=m.revision, trust_remote_code=m.trust_remote_code).to_dict()
