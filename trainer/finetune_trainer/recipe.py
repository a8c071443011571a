"""The supervised recipe (SFT and CPT): setup -> train -> save, read top to bottom.

Why our own loop rather than transformers' Trainer or trl's SFTTrainer: the run must (1) count trainable
tokens exactly and normalise the loss by them across accumulation and ranks, so one process and N
processes give the same curve; (2) resume a preempted run at the exact step, data position and RNG state
from an atomic checkpoint; (3) write the output atomically with the manifest last; (4) feed our metrics,
progress and termination message. Those are the parts Trainer hides. Model loading, adapters (peft),
schedulers (transformers) and the data pipeline are the well-kept libraries'.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

from finetune_api.trainer_config import TrainerConfig

from . import checkpoint as ckpt
from .batching import BatchPlan, plan_batches
from .distributed import Dist, all_sum, barrier, init_distributed, shutdown
from .evaluation import eval_loss, exact_match
from .flops import flops_per_token, mfu
from .metrics import TrainerMetrics
from .modeling import apply_method, enable_checkpointing, load_model, load_tokenizer
from .outputs import save_outputs
from .progress import Progress


class Preempted(Exception):
    """SIGTERM arrived (pod deleted, job suspended): a checkpoint was saved and the run stops."""


def run(cfg: TrainerConfig) -> dict[str, Any]:
    """Train as `cfg` says and write the output; returns the summary (also in manifest.json).

    Raises:
        TrainerInputError: bad data, model or options (one clean line for the user).
        Preempted: stopped by SIGTERM after saving a checkpoint.
    """
    d = init_distributed(cfg.device)
    try:
        return _run(cfg, d)
    finally:
        shutdown(d)


def _run(cfg: TrainerConfig, d: Dist) -> dict[str, Any]:
    import torch

    spec = cfg.job.spec
    t = spec.training
    torch.manual_seed(t.seed)
    log = (lambda s: print(s, flush=True)) if d.main else (lambda s: None)

    # --- setup: tokenizer, data, model, optimizer ---------------------------------------------------
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = load_tokenizer(cfg)
    data = _load_data(cfg, tokenizer)
    log(data.report.summary())
    train = data.train
    plan = plan_batches(t, d.world, cfg.device, len(train))
    steps_per_epoch = len(train) // plan.global_batch
    total_steps = t.max_steps or max(1, math.ceil((t.epochs or 1.0) * steps_per_epoch))

    model = load_model(cfg)
    model = apply_method(model, cfg)
    enable_checkpointing(model, t.gradient_checkpointing is True)
    model.to(d.device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    log(f"model: {n_total:,} parameters, {n_trainable:,} trainable ({100 * n_trainable / n_total:.2f}%); "
        f"batch: micro {plan.micro} x accumulation {plan.accumulation} x {d.world} process(es) = "
        f"{plan.global_batch} per step; {total_steps} steps ({steps_per_epoch} per epoch)")
    wrapped = model
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model, device_ids=[d.local_rank] if cfg.device == "cuda" else None)
    optimizer = torch.optim.AdamW(trainable, lr=t.learning_rate, weight_decay=t.weight_decay,
                                  fused=cfg.device == "cuda")
    from transformers import get_scheduler

    scheduler = get_scheduler(t.scheduler, optimizer, num_warmup_steps=int(t.warmup_ratio * total_steps),
                              num_training_steps=total_steps)

    # --- resume from the newest checkpoint, if any ---------------------------------------------------
    out = Path(cfg.output_dir)
    step = 0
    latest = ckpt.latest_checkpoint(out)
    if latest is not None:
        state = ckpt.load_checkpoint(latest, model, optimizer, scheduler, rank=d.rank)
        step = state["step"]
        log(f"resuming from checkpoint {latest.name} (step {step} of {total_steps})")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        _trim_history(out, step)

    # --- observers: metrics endpoint, TensorBoard, progress ------------------------------------------
    metrics = TrainerMetrics(cfg.job.metadata.namespace or "", cfg.job.metadata.name, d.rank)
    if d.main:
        metrics.serve(cfg.metrics_port)
    metrics.set(total_steps=total_steps, step=step, start_time_seconds=time.time())
    writer = _tensorboard(out) if d.main else None
    progress = Progress(total_steps, start=step, every=t.log_every_steps) if d.main else None
    fpt = flops_per_token(model, spec.method.type, spec.dataset.max_length // 2)
    stop = _sigterm_flag()
    initial_eval = None
    if step == 0 and data.validation:
        initial_eval = eval_loss(wrapped, data.validation, plan.micro, d, tokenizer.pad_token_id)
        log(f"step 0: eval loss {initial_eval:.4f} (before training)")
        if d.main:
            _log_scalars(writer, out, {"step": 0, "eval_loss": initial_eval})

    # --- train ---------------------------------------------------------------------------------------
    last: dict[str, Any] = {}
    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        batches = _micro_batches(train, plan, step, steps_per_epoch, t.seed, d, tokenizer.pad_token_id)
        n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        n_real = sum(b.pop("n_real") for b in batches)
        g_tokens, g_real = all_sum([float(n_tokens), float(n_real)], d)
        loss_sum = 0.0
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            ctx = wrapped.no_sync() if (d.world > 1 and not sync) else _nullcontext()
            with ctx:
                ce = _ce_sum(wrapped, batch, d.device)
                (ce * d.world / max(g_tokens, 1.0)).backward()
            loss_sum += float(ce.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, t.max_grad_norm if t.max_grad_norm > 0 else float("inf")))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        (g_loss,) = all_sum([loss_sum], d)
        loss = g_loss / max(g_tokens, 1.0)
        dt = time.perf_counter() - t0
        lr = scheduler.get_last_lr()[0]
        last = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": g_real / dt, "trainable_tokens_per_s": g_tokens / dt}
        metrics.set(step=step, train_loss=loss, learning_rate=lr, grad_norm=grad_norm, epoch=step / steps_per_epoch,
                    tokens_per_second=g_real / dt, trainable_tokens_per_second=g_tokens / dt,
                    mfu_ratio=mfu(g_real / dt / d.world, fpt) if cfg.device == "cuda" else None,
                    eta_seconds=progress.eta(step) if progress else None)
        metrics.tokens.inc(n_real)
        metrics.gpu_memory()
        if d.main:
            progress.update(step, loss, lr, g_real / dt)
            _log_scalars(writer, out, last)
        if t.eval_every_steps and step % t.eval_every_steps == 0 and step < total_steps and data.validation:
            ev = eval_loss(wrapped, data.validation, plan.micro, d, tokenizer.pad_token_id)
            metrics.set(eval_loss=ev)
            if d.main:
                progress.note(f"step {step}: eval loss {ev:.4f}")
                _log_scalars(writer, out, {"step": step, "eval_loss": ev})
        preempt = all_sum([1.0 if stop["flag"] else 0.0], d)[0] > 0
        if step % spec.output.save_every_steps == 0 or preempt:
            ckpt.save_checkpoint(out, step, model, optimizer, scheduler, {"total_steps": total_steps},
                                 spec.output.keep_last_checkpoints, rank=d.rank, barrier=lambda: barrier(d))
            metrics.checkpoints.inc()
            metrics.set(last_checkpoint_step=step)
            if preempt:
                if d.main:
                    progress.note(f"SIGTERM: saved checkpoint at step {step}; stopping (resume continues from here)")
                raise Preempted(f"preempted at step {step}; checkpoint saved")
    if progress:
        progress.close()

    # --- evaluate and save -------------------------------------------------------------------------
    summary: dict[str, Any] = {"steps": step, "final_loss": last.get("loss"), "trainable_parameters": n_trainable,
                               "data": data.report.as_dict()}
    if initial_eval is None and d.main:
        initial_eval = _history_eval_at_step0(out)
    if initial_eval is not None:
        summary["initial_eval_loss"] = initial_eval
    if data.validation:
        summary["final_eval_loss"] = eval_loss(wrapped, data.validation, plan.micro, d, tokenizer.pad_token_id)
        metrics.set(eval_loss=summary["final_eval_loss"])
        if d.main:
            summary["eval_exact_match"] = exact_match(model, tokenizer, data.validation, d.device)
            _log_scalars(writer, out, {"step": step, "eval_loss": summary["final_eval_loss"]})
    if ckpt.latest_checkpoint(out) is None or ckpt.latest_checkpoint(out).name != f"{ckpt.PREFIX}{step:08d}":
        ckpt.save_checkpoint(out, step, model, optimizer, scheduler, {"total_steps": total_steps},
                             spec.output.keep_last_checkpoints, rank=d.rank, barrier=lambda: barrier(d))
    if d.main:
        if writer is not None:
            writer.close()
        summary = save_outputs(cfg, model, tokenizer, summary)
    barrier(d)
    return summary


# --- the pieces the loop uses ------------------------------------------------------------------------

def _load_data(cfg: TrainerConfig, tokenizer):
    from .data import load_datasets

    spec = cfg.job.spec
    ds = spec.dataset.model_copy(update={"paths": cfg.dataset_paths, "validation_paths": cfg.validation_paths})
    return load_datasets(ds, tokenizer, seed=spec.training.seed, base_dir=Path(cfg.output_dir).parent,
                         objective=spec.objective.type)


def _micro_batches(train: list, plan: BatchPlan, step: int, steps_per_epoch: int, seed: int, d: Dist,
                   pad_id: int) -> list[dict]:
    """This rank's micro-batches of global step `step`: a seeded permutation per epoch, sliced by rank."""
    import torch

    from .data import collate

    epoch, pos = divmod(step, steps_per_epoch)
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    perm = torch.randperm(len(train), generator=g).tolist()
    chunk = perm[pos * plan.global_batch:(pos + 1) * plan.global_batch]
    out = []
    for j in range(plan.accumulation):
        start = (j * d.world + d.rank) * plan.micro
        examples = [train[i] for i in chunk[start:start + plan.micro]]
        out.append(collate(examples, pad_id) | {"n_real": sum(len(e["input_ids"]) for e in examples)})
    return out


def _ce_sum(model, batch: dict, device):
    """Summed next-token cross-entropy over the tokens with a target (labels != -100)."""
    import torch.nn.functional as F

    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    logits = model(**inputs).logits
    labels = batch["labels"].to(device)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction="sum")


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _sigterm_flag() -> dict:
    flag = {"flag": False}

    def handler(signum, frame):
        flag["flag"] = True

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests): no handler
        pass
    return flag


def _tensorboard(out: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "runs"))


def _log_scalars(writer, out: Path, row: dict) -> None:
    """Append a row to metrics.jsonl and TensorBoard."""
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "step" and v is not None:
                writer.add_scalar(("eval/" if k.startswith("eval") else "train/") + k, v, row["step"])


def _history_eval_at_step0(out: Path):
    """The before-training eval loss a resumed run logged in its first session, if any."""
    f = out / "metrics.jsonl"
    if not f.exists():
        return None
    for r in f.read_text(encoding="utf-8").splitlines():
        row = json.loads(r) if r else {}
        if row.get("step") == 0 and "eval_loss" in row:
            return row["eval_loss"]
    return None


def _trim_history(out: Path, step: int) -> None:
    """Drop metrics.jsonl rows past the resumed step (they belong to the lost tail of the last run)."""
    f = out / "metrics.jsonl"
    if not f.exists():
        return
    rows = [r for r in f.read_text(encoding="utf-8").splitlines() if r and json.loads(r)["step"] <= step]
    tmp = f.with_suffix(".tmp")
    tmp.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    tmp.replace(f)
