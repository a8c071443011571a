"""Our trainer on a benchmark workload: the real recipe (`finetune_trainer.recipe.run`), fed pre-tokenized data.

Everything that trains is the production path — TrainerConfig, load_model (attention choice, Liger),
apply_method (peft), the loop with its loss normalisation, fused AdamW, the scheduler and output writing
after the loop. Three seams are replaced, bench-side only, because the benchmark has no text and no tokenizer
for a 128k vocabulary and must pin what it measures; the launch plan is given whole instead of planned:

- `modeling.load_tokenizer` -> a stub that knows the pad id and saves nothing;
- `session._load_data` -> the synthetic examples (or rows packed by data/packing.py) as a DataBundle;
- the TrainerConfig's `plan` -> the workload's explicit micro-batch / checkpointing, so each ablation row runs
  the shape it names (the planner, calibrated since on these runs, would pick its own);
- `recipe.micro_batches` -> the same function, recording each step's token counts, so steady-state
  tokens/s is total tokens over total time rather than a mean of per-step rates.

An ablation switches pieces off: attention implementation, Liger, the fast LoRA forward, checkpointing, and
picks the strategy (full fine-tuning on one GPU: `single` = fp32 weights under bf16 autocast, or `fsdp` =
FSDP2 on one rank, fp32 masters with bf16 compute copies).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from workloads import Workload, device, pad_id


class _StubTokenizer:
    def __init__(self, pad: int):
        self.pad_token_id = pad

    def save_pretrained(self, path, **kw):
        return ()


def job_config(w: Workload, model_dir: Path, out_dir: Path, *, steps: int, lr: float, warmup_ratio: float,
               seed: int, global_batch: int, micro: int, checkpointing: bool, attn: str = "auto",
               strategy: str = "auto", packing: bool = True, padding_free: bool = True,
               checkpoint_layers: int | None = None):
    """The TrainerConfig a user's FineTuneJob for this workload would resolve to."""
    from finetune_api.job import FineTuneJob
    from finetune_api.trainer_config import TrainerConfig

    method = {"type": w.method}
    if w.method in ("lora", "qlora"):
        method["lora"] = {"rank": w.lora_rank, "alpha": w.lora_alpha, "dropout": 0.0, "targetModules": "all-linear"}
    job = {
        "apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": f"bench-{w.id.lower()}"},
        "spec": {
            "model": {"path": str(model_dir), "dtype": "bfloat16" if device() == "cuda" else "float32",
                      "attnImplementation": attn},
            "dataset": {"paths": ["synthetic.jsonl"], "format": "text", "maxLength": w.max_length, "packing": packing,
                        "paddingFree": padding_free},
            "method": method,
            "training": {"maxSteps": steps, "learningRate": lr, "scheduler": "cosine", "warmupRatio": warmup_ratio,
                         "weightDecay": 0.0, "maxGradNorm": 1.0, "seed": seed, "globalBatchSize": global_batch,
                         "microBatchSize": micro, "gradientCheckpointing": checkpointing},
            "output": {"path": str(out_dir), "saveEverySteps": 10_000_000, "keepLastCheckpoints": 1},
            "distributed": {"strategy": strategy},
        },
    }
    from finetune_api.trainer_config import LaunchPlan
    from finetune_plan import resolve_strategy

    plan = LaunchPlan(device=device(), strategy=resolve_strategy(strategy, w.method in ("full", "spectrum"), 1, device()),
                      micro_batch=micro, gradient_accumulation=max(1, global_batch // micro),
                      checkpointing=checkpointing, checkpoint_layers=checkpoint_layers if checkpointing else None)
    return TrainerConfig(job=FineTuneJob.model_validate(job), model_path=str(model_dir),
                         dataset_paths=[str(out_dir / "synthetic.jsonl")], output_dir=str(out_dir), plan=plan)


@contextmanager
def _seams(train: list[dict], liger_on: bool, fast_lora: bool, counts: list, pad: int):
    from finetune_trainer import liger, lora_forward, modeling, recipe, session
    from finetune_trainer.data import DataBundle, DataReport
    from transformers.models.llama import modeling_llama

    saved = {"load_tokenizer": modeling.load_tokenizer, "_load_data": session._load_data,
             "micro_batches": recipe.micro_batches}
    saved_apply, saved_rope = liger.apply_liger, modeling_llama.apply_rotary_pos_emb
    saved_lora = lora_forward.use_fast_lora_forward
    report = DataReport(max_length=0, read=len(train), kept=len(train),
                        tokens=sum(len(e["input_ids"]) for e in train),
                        trainable_tokens=sum(sum(t != -100 for t in e["labels"]) for e in train))

    def micro_batches(*a, **k):
        out = saved["micro_batches"](*a, **k)
        counts.append({"real_tokens": sum(b["n_real"] for b in out),
                       "trainable_tokens": sum(int((b["labels"][:, 1:] != -100).sum()) for b in out)})
        return out

    modeling.load_tokenizer = lambda cfg: _StubTokenizer(pad)
    session._load_data = lambda cfg, tok: DataBundle(train, [], report, None, None)
    recipe.micro_batches = micro_batches
    if not liger_on:
        liger.apply_liger = lambda model, **kw: False
    if not fast_lora:
        lora_forward.use_fast_lora_forward = lambda model: 0
    try:
        yield
    finally:
        modeling.load_tokenizer, session._load_data = saved["load_tokenizer"], saved["_load_data"]
        recipe.micro_batches = saved["micro_batches"]
        liger.apply_liger = saved_apply
        lora_forward.use_fast_lora_forward = saved_lora
        modeling_llama.apply_rotary_pos_emb = saved_rope  # Liger patches RoPE module-wide


def run_ours(w: Workload, model_dir: Path, train: list[dict], out_dir: Path, *, steps: int, lr: float,
             warmup_ratio: float, seed: int, global_batch: int, micro: int, checkpointing: bool,
             attn: str = "auto", liger_on: bool = True, fast_lora: bool = True, profile_to: Path | None = None,
             strategy: str = "auto", packing: bool = True, padding_free: bool = True,
             checkpoint_layers: int | None = None) -> dict:
    """Run the recipe on `train` (packed rows with position_ids, or with `packing=False` examples, which the
    recipe runs padding-free or padded as `padding_free` says); return per-step numbers.

    Returns:
        {"steps": [{"step", "loss", "seconds", "real_tokens", "trainable_tokens"}], "peak_alloc_gib",
         "peak_reserved_gib", "attn", "liger", "setup_seconds"}.
    """
    import shutil

    import torch
    from finetune_trainer import recipe

    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    cfg = job_config(w, model_dir, out_dir, steps=steps, lr=lr, warmup_ratio=warmup_ratio, seed=seed,
                     global_batch=global_batch, micro=micro, checkpointing=checkpointing, attn=attn,
                     strategy=strategy, packing=packing, padding_free=padding_free,
                     checkpoint_layers=checkpoint_layers)
    if cfg.strategy != "single":  # FSDP2 on one GPU: the one-rank process group torchrun would describe
        import os

        for k, v in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                     "MASTER_PORT": "29517"}.items():
            os.environ.setdefault(k, v)
    counts: list[dict] = []
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with _seams(train, liger_on, fast_lora, counts, pad_id(w.config)):
        if profile_to is None:
            recipe.run(cfg)
        else:
            _profiled(recipe, cfg, profile_to)
    total = time.perf_counter() - t0
    rows = [json.loads(r) for r in (out_dir / "metrics.jsonl").read_text().splitlines() if r]
    rows = [r for r in rows if "tokens_per_s" in r]
    steps_out = []
    for r, c in zip(rows, counts):
        steps_out.append({"step": r["step"], "loss": r["loss"], "seconds": c["real_tokens"] / r["tokens_per_s"],
                          **c})
    out = {"steps": steps_out, "peak_alloc_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0,
           "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if gpu else 0.0,
           "setup_seconds": total - sum(s["seconds"] for s in steps_out)}
    import gc

    shutil.rmtree(out_dir, ignore_errors=True)  # checkpoints and weights: a full 8B run writes tens of GB
    gc.collect()
    if gpu:
        torch.cuda.empty_cache()
    return out


def _profiled(recipe, cfg, profile_dir: Path) -> None:
    """recipe.run under torch.profiler (CUDA kernels), writing the top kernels table to the file profile_dir."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    state = {"n": 0}
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                   schedule=schedule(wait=1, warmup=1, active=2, repeat=1))
    orig = recipe.micro_batches  # the counting seam: called once per step

    def stepping(*a, **k):
        if state["n"]:
            prof.step()
        state["n"] += 1
        return orig(*a, **k)

    recipe.micro_batches = stepping
    with prof:
        recipe.run(cfg)
    recipe.micro_batches = orig
    profile_dir.parent.mkdir(parents=True, exist_ok=True)
    averages = prof.key_averages()
    try:
        table = averages.table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90)
    except (KeyError, AttributeError, ValueError):
        table = averages.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=90)
    profile_dir.write_text(table)
