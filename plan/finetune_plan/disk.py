"""How many bytes a run writes to its output volume: each checkpoint, the final output, the peak.

Why: an 8B full fine-tune writes ~90 GiB per resumable checkpoint (fp32 weights + AdamW's two moments) and
16 GB of bf16 weights at the end; on a 128 GiB volume a run that planned only its GPU memory filled the disk
in its last minute. The plan says the figures before anything runs (`finetune plan`), the trainer checks the
free space against them before every save, and the operator sizes the output volume it creates from them.

Counted per method (N = trainable parameters, P = all parameters):
- a checkpoint holds the trainable weights in fp32 (4N; adapters and master weights are fp32) and AdamW's two
  fp32 moments (8N); DeepSpeed adds its bf16 copy of the trainable weights (2N). Sharded strategies (FSDP,
  ZeRO) split it evenly over the ranks; replicated ones (one process, DDP) have rank 0 write all of it.
- the output holds the adapter (fp32, 4N) or the full weights in the model's dtype (2 bytes for bf16, 2P),
  plus the merged model in the model's dtype when `mergeAdapter` is set.
- at most `keepLastCheckpoints + 1` checkpoints exist at once (the new one lands before the oldest goes); at the
  end, the kept checkpoints and the output.
"""

from __future__ import annotations

from finetune_api.job import FineTuneJob
from finetune_api.trainer_config import DiskPlan

from .memory import GiB, ModelShape, Workload, trainable_params

SMALL_FILES = 4 * 1024 ** 2  # configs, metrics, TensorBoard events, the plot, the manifest
TOKENIZER_BYTES_PER_TOKEN = 150  # tokenizer.json per vocabulary entry (Llama 3: ~70, Gemma: ~130)


def dtype_bytes(job: FineTuneJob) -> int:
    """Bytes per weight of the model's stored dtype (auto means bf16 on GPUs; a CPU run keeps fp32)."""
    return {"auto": 2, "bfloat16": 2, "float16": 2, "float32": 4}[job.spec.model.dtype]


def disk_plan(shape: ModelShape, job: FineTuneJob, world: int, strategy: str | None = None) -> DiskPlan:
    """The bytes `job` writes with `world` processes (strategy: the resolved one, if known)."""
    spec = job.spec
    targets = spec.lora.target_modules
    w = Workload(method=spec.method.type, strategy="ddp", world=world, seq_len=1, gpu_bytes=0,
                 lora_rank=spec.lora.rank, lora_targets=None if targets == "all-linear" else tuple(targets),
                 spectrum_fraction=spec.spectrum.fraction)
    n = trainable_params(shape, w)
    strategy = strategy or spec.distributed.strategy
    deepspeed = strategy.startswith("deepspeed")
    parts = {"weights": 4 * n, "optimizer": 8 * n}
    if deepspeed:
        parts["weights_bf16"] = 2 * n
    ckpt = sum(parts.values())
    sharded = world > 1 and (deepspeed or strategy == "fsdp" or (strategy == "auto" and not spec.method.is_adapter))
    per_rank = -(-ckpt // world) if sharded else ckpt
    if spec.method.is_adapter:
        output = 4 * n + (dtype_bytes(job) * shape.params if spec.output.merge_adapter else 0)
    else:
        output = dtype_bytes(job) * shape.params
    output += SMALL_FILES + TOKENIZER_BYTES_PER_TOKEN * shape.vocab
    keep = spec.output.keep_last_checkpoints
    saves = keep + 1
    if spec.training.max_steps:
        saves = spec.training.max_steps // spec.output.save_every_steps
    during = min(saves, keep + 1) * ckpt
    end = min(saves, keep) * ckpt + output
    return DiskPlan(checkpoint_bytes=ckpt, checkpoint_bytes_per_rank=per_rank, checkpoint_parts=parts,
                    output_bytes=output, peak_bytes=max(during, end, output))


def _gib(b: int) -> str:
    if b >= GiB / 10:
        return f"{b / GiB:.1f} GiB"
    return f"{b / 1024 ** 2:.0f} MiB" if b >= 1024 ** 2 else f"{max(1, round(b / 1024))} KiB"


def describe_disk(d: DiskPlan) -> list[str]:
    """Lines for `finetune plan`."""
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in d.checkpoint_parts.items())
    return [f"disk:          each checkpoint {_gib(d.checkpoint_bytes)} ({parts}; the largest rank writes "
            f"{_gib(d.checkpoint_bytes_per_rank)}), final output {_gib(d.output_bytes)}, "
            f"peak {_gib(d.peak_bytes)} on the output volume"]
