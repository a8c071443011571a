"""The launch plan: one function decides processes, strategy, batch shape, checkpointing, precision and disk.

Why one function: `strategy: auto`, micro-batch `auto` and checkpointing `auto` used to be decided in five
places (API, operator, batching, planner, recipe), so the operator's launch facts could name a strategy other
than the one that ran. `plan_launch` is now the only place; its result (`finetune_api.LaunchPlan`) is
recorded in the trainer config, printed by `finetune plan` and `finetune run`, and obeyed by the trainer.

It runs wherever the facts are: `finetune run` / `finetune plan` know the machine and the model's config; the
operator knows neither the GPU nor the model, so it passes what it knows and gets a partial plan, which the
pod's launcher completes with this same function before any worker starts (`LaunchPlan.complete`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from finetune_api.contract import UserError
from finetune_api.job import FineTuneJob
from finetune_api.trainer_config import LaunchPlan
from finetune_api.training import TrainingSpec

from . import memory
from .disk import disk_plan
from .memory import GiB, ModelShape


@dataclass(frozen=True)
class Machine:
    """What the plan is made for.

    Attributes:
        device: `cpu` or `cuda`.
        nodes, nproc_per_node: processes of the run.
        gpu_bytes: memory of one GPU (None: not known here, e.g. in the operator).
        fused_kernels: Liger's kernels are installed where the run executes (the trainer image has them).
    """

    device: str
    nodes: int = 1
    nproc_per_node: int = 1
    gpu_bytes: Optional[int] = None
    fused_kernels: bool = True

    @property
    def world(self) -> int:
        return self.nodes * self.nproc_per_node


def resolve_strategy(requested: str, full_weights: bool, world_size: int, device: str = "cuda") -> str:
    """`auto` -> a concrete strategy when no memory plan is needed to choose; one process needs none ("single").

    Full fine-tuning and Spectrum on GPUs resolve `auto` to FSDP2 even on one GPU: its mixed precision (fp32
    master weights, bf16 compute copies, fp32 gradients) runs the residual stream and Liger's kernels in bf16,
    where fp32 weights under autocast cannot (bench/results/W3-h100-2026-11-25.json: 47.6% vs 32.7% MFU).

    An explicit fsdp / deepspeed-zero2 / deepspeed-zero3 is kept on one process: with `cpuOffload` it is how a
    model too large for one GPU trains there (ZeRO-Offload), and dropping it would silently drop the offload.
    """
    if requested == "auto" and full_weights and device == "cuda":
        return "fsdp"
    if world_size == 1 and requested in ("auto", "ddp"):
        return "single"
    if requested != "auto":
        return requested
    return "fsdp" if full_weights else "ddp"


def auto_candidates(job: FineTuneJob, machine: Machine) -> Optional[list[str]]:
    """The strategies the memory plan chooses among for `strategy: auto`, or None when no choice is left.

    More than one GPU: DDP when it fits, else FSDP2 full shard; full fine-tuning and Spectrum skip DDP (fp32
    weights under autocast, see resolve_strategy). Not FSDP shard-grad-op, though it shards less: on W4 (8B full,
    2xH200, micro 4 x 2) it fit (125.5 GiB of 140) but trained at 8,037 tok/s/GPU (37.7% MFU) against full shard's
    10,540 (49.4%) (bench/results/multi-gpu-h200-w4-auto-2026-11-30.json, multi-gpu-h200-w4-fsdp-2026-11-30.json).
    """
    spec = job.spec
    if spec.distributed.strategy != "auto" or machine.device != "cuda" or machine.world == 1:
        return None
    sharded = ["fsdp"]
    return sharded if spec.method.trains_base_weights else ["ddp", *sharded]


def plan_batches(t: TrainingSpec, world: int, device: str, auto_micro: Optional[int] = None) -> tuple[int, int]:
    """(micro-batch, accumulation) from the spec, `auto` filled with `auto_micro` (default 1 on CPU, 8 on GPU).

    Raises:
        UserError: explicit numbers that contradict globalBatchSize (a micro-batch x processes that does not divide
            it, or explicit accumulation that gives another size).
    """
    want = t.global_batch_size
    if t.micro_batch_size == "auto":
        cap = auto_micro or (1 if device == "cpu" else 8)
        micro = max(1, min(cap, want // world))
    else:
        micro = t.micro_batch_size
    if t.gradient_accumulation == "auto":
        if t.micro_batch_size != "auto" and want % (micro * world):
            raise UserError(  # an explicit micro-batch that cannot make globalBatchSize: never run another size
                f"spec.training.globalBatchSize {want} is not a multiple of microBatchSize {micro} x {world} "
                f"process(es) = {micro * world}, so no accumulation reaches it; set globalBatchSize to a multiple "
                f"of {micro * world}, or microBatchSize to auto")
        accumulation = max(1, want // (micro * world))
    else:
        accumulation = t.gradient_accumulation
        if t.micro_batch_size != "auto" and "global_batch_size" in t.model_fields_set \
                and micro * accumulation * world != t.global_batch_size:
            raise UserError(
                f"spec.training.globalBatchSize is {t.global_batch_size} but microBatchSize {micro} x "
                f"gradientAccumulation {accumulation} x {world} process(es) = {micro * accumulation * world}; "
                "set globalBatchSize to match, or one of the others to 'auto'")
    return micro, accumulation


def workload(job: FineTuneJob, strategy: str, machine: Machine) -> memory.Workload:
    """The memory planner's description of this run."""
    spec = job.spec
    targets = spec.lora.target_modules
    return memory.Workload(method=spec.method.type, strategy=strategy if strategy != "single" else "ddp",
                           world=machine.world, seq_len=spec.dataset.max_length, gpu_bytes=machine.gpu_bytes or 0,
                           lora_rank=spec.lora.rank, lora_targets=None if targets == "all-linear" else tuple(targets),
                           lora_dropout=spec.lora.dropout,
                           spectrum_fraction=spec.spectrum.fraction, cpu_offload=spec.distributed.cpu_offload,
                           rows_per_example=2 if spec.objective.is_preference else 1,
                           fused_kernels=machine.fused_kernels)


def precision(job: FineTuneJob, device: str, strategy: Optional[str]) -> str:
    """Weights and compute in words (what modeling.weights_dtype / autocast_dtype will do)."""
    spec = job.spec
    dtype = spec.model.dtype
    if device != "cuda":
        return "fp32" if dtype in ("auto", "float32") else dtype
    compute = {"auto": "bf16", "bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[dtype]
    if spec.method.type == "qlora":
        return f"nf4 base + {compute} compute"
    if spec.method.trains_base_weights and compute != "fp32" and not (strategy or "").startswith("deepspeed"):
        return f"fp32 master + {compute} compute"
    if spec.method.trains_base_weights and compute != "fp32":
        return f"{compute} (DeepSpeed keeps the fp32 master)"
    return compute


def plan_launch(job: FineTuneJob, machine: Machine, shape: Optional[ModelShape] = None) -> LaunchPlan:
    """The launch plan of `job` on `machine`; complete when the machine's GPU memory and the model are known.

    Args:
        job: the validated job.
        machine: device, processes, GPU memory (None where unknown).
        shape: the model's shape from its config.json (None where unknown: the operator).

    Raises:
        memory.DoesNotFit: nothing fits the GPU (names the sizes and what to change).
        UserError: batch numbers that contradict each other.
    """
    spec, t = job.spec, job.spec.training
    world = machine.world
    base = {"nodes": machine.nodes, "nproc_per_node": machine.nproc_per_node, "device": machine.device,
            "layers": shape.layers if shape else None}
    def disk(strategy: Optional[str]):
        return disk_plan(shape, job, world, strategy) if shape else None

    if machine.device != "cuda":
        strategy = resolve_strategy(spec.distributed.strategy, spec.method.trains_base_weights, world, "cpu")
        micro, acc = plan_batches(t, world, "cpu")
        return LaunchPlan(**base, strategy=strategy, micro_batch=micro, gradient_accumulation=acc,
                          checkpointing=t.gradient_checkpointing is True, precision=precision(job, "cpu", strategy),
                          disk=disk(strategy))
    candidates = auto_candidates(job, machine)
    fixed = resolve_strategy(spec.distributed.strategy, spec.method.trains_base_weights, world)
    if candidates is not None and "ddp" in candidates:
        fixed = None  # DDP or FSDP: only the memory plan can tell
    if shape is None or machine.gpu_bytes is None:  # the operator: decide what needs no model, leave the rest
        explicit = t.micro_batch_size != "auto" and t.gradient_accumulation != "auto"
        micro, acc = plan_batches(t, world, "cuda") if explicit else (None, None)
        ck = None if t.gradient_checkpointing == "auto" else bool(t.gradient_checkpointing)
        return LaunchPlan(**base, strategy=fixed, micro_batch=micro, gradient_accumulation=acc, checkpointing=ck,
                          precision=precision(job, "cuda", fixed), disk=disk(fixed))
    p = memory.choose(shape, workload(job, fixed or "ddp", machine), t.global_batch_size, candidates=candidates,
                      micro=None if t.micro_batch_size == "auto" else t.micro_batch_size,
                      checkpointing=None if t.gradient_checkpointing == "auto" else t.gradient_checkpointing)
    strategy = fixed if candidates is None else ("fsdp" if p.strategy.startswith("fsdp") else p.strategy)
    micro, acc = plan_batches(t, world, "cuda", auto_micro=p.micro)
    return LaunchPlan(**base, strategy=strategy, micro_batch=micro, gradient_accumulation=acc,
                      checkpointing=p.checkpointing, checkpoint_layers=p.checkpoint_layers if p.checkpointing else None,
                      reshard_after_forward=p.fsdp_reshard_after_forward, precision=precision(job, "cuda", strategy),
                      gpu_memory_bytes=machine.gpu_bytes, memory_gib=p.estimate.as_gib(), disk=disk(strategy))


def describe(plan: LaunchPlan) -> list[str]:
    """The plan as lines for a person (what `finetune plan` prints and the trainer logs)."""
    n = plan.world_size
    lines = []
    where = (f"{n} GPU(s)" + (f" x {plan.gpu_memory_bytes / GiB:.0f} GiB" if plan.gpu_memory_bytes else "")
             if plan.device == "cuda" else f"{n} CPU process(es)")
    lines.append(f"processes:     {where}" + (f" on {plan.nodes} nodes" if plan.nodes > 1 else ""))
    lines.append(f"strategy:      {plan.strategy or 'decided on the node (memory plan)'}"
                 + ("" if plan.reshard_after_forward or plan.strategy != "fsdp" else " (shard-grad-op)"))
    if plan.micro_batch is not None and plan.gradient_accumulation is not None:
        lines.append(f"micro-batch:   {plan.micro_batch} x accumulation {plan.gradient_accumulation} x {n} = "
                     f"{plan.global_batch} per step")
    else:
        lines.append("micro-batch:   decided on the node (memory plan)")
    if plan.checkpointing is None:
        ck = "decided on the node (memory plan)"
    elif not plan.checkpointing:
        ck = "off"
    else:
        k = plan.checkpoint_layers
        ck = "on" if k is None or (plan.layers and k >= plan.layers) else f"{k} of {plan.layers} blocks"
    lines.append(f"checkpointing: {ck}")
    if plan.precision:
        lines.append(f"precision:     {plan.precision}")
    if plan.memory_gib:
        lines.append("memory per GPU (GiB): " + ", ".join(f"{k} {v:.1f}" for k, v in plan.memory_gib.items()))
    if plan.disk:
        from .disk import describe_disk

        lines += describe_disk(plan.disk)
    return lines
