"""The training recipe (SFT, CPT, DPO, ORPO on any method and strategy): setup -> train -> save, top to bottom.

Why our own loop rather than transformers' Trainer or trl's SFTTrainer: the run must (1) count trainable
tokens exactly and normalise the loss by them across accumulation and ranks, so one process and N
processes give the same curve; (2) resume a preempted run at the exact step, data position and RNG state
from an atomic checkpoint; (3) write the output atomically with the manifest last; (4) feed our metrics,
progress and termination message. Those are the parts Trainer hides. Model loading, adapters (peft),
schedulers (transformers) and the data pipeline are the well-kept libraries'. The objectives differ only in
the loss of one micro-batch (`_ce_sum` here, `preference.pair_terms` for DPO/ORPO), each normalised by
step-wide global counts (tokens, pairs) so the curve does not depend on micro-batch or process count; the
strategies (parallel.py) differ only in how the model is wrapped, stepped and checkpointed.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

from finetune_api.trainer_config import LaunchPlan, TrainerConfig

from . import checkpoint as ckpt
from . import parallel
from .distributed import Dist, all_sum, barrier, init_distributed, shutdown
from .evaluation import eval_loss, exact_match
from .flops import flops_per_token, mfu
from .metrics import TrainerMetrics
from .modeling import (apply_method, autocast_dtype, check_targets, enable_checkpointing, load_model, load_tokenizer,
                       meta_model, uses_padding_free)
from .outputs import SPECTRUM_FILE, save_outputs
from .preference import collate_pairs, pair_terms, preference_eval, reference_logps
from .progress import Progress


class Preempted(Exception):
    """SIGTERM arrived (pod deleted, job suspended): a checkpoint was saved and the run stops."""


def run(cfg: TrainerConfig) -> dict[str, Any]:
    """Train as `cfg` says and write the output; returns the summary (also in manifest.json).

    Raises:
        TrainerInputError: bad data, model or options (one clean line for the user).
        Preempted: stopped by SIGTERM after saving a checkpoint.
    """
    d = init_distributed(cfg.device, cfg.job.spec.distributed.timeout_seconds)
    summary = _run(cfg, d)
    shutdown(d)  # only after every rank succeeded: a failed rank leaves without waiting on its peers (worker.py)
    return summary


def _run(cfg: TrainerConfig, d: Dist) -> dict[str, Any]:
    import torch

    spec = cfg.job.spec
    t = spec.training
    objective = spec.objective.type
    preference = spec.objective.is_preference
    torch.manual_seed(t.seed)
    log = (lambda s: print(s, flush=True)) if d.main else (lambda s: None)
    gsum = lambda v: all_sum(v, d)  # noqa: E731

    # --- setup: tokenizer, data, model, strategy, optimizer ------------------------------------------
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = load_tokenizer(cfg)
    data = _load_data(cfg, tokenizer)
    log(data.report.summary())
    train = [dict(e, index=i) for i, e in enumerate(data.train)] if preference else data.train
    padding_free = uses_padding_free(cfg)
    check_targets(meta_model(cfg), cfg)  # before any weight loads
    plan = cfg.plan  # decided by finetune_plan.plan_launch before this process started; obeyed, not re-derived
    check_enough_data(len(train), plan)
    steps_per_epoch = len(train) // plan.global_batch
    total_steps = t.max_steps or max(1, math.ceil((t.epochs or 1.0) * steps_per_epoch))

    model = load_model(cfg, d.local_rank)
    model, spectrum_scan = apply_method(model, cfg, rank=d.rank, world=d.world, all_sum=gsum)
    n_ckpt = enable_checkpointing(model, plan.checkpointing, plan.checkpoint_layers)
    if spec.method.type != "qlora":  # a 4-bit model is placed by device_map at load
        model.to(d.device)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    log(f"model: {n_total:,} parameters, {n_trainable:,} trainable ({100 * n_trainable / n_total:.2f}%); "
        f"batch: micro {plan.micro_batch} x accumulation {plan.gradient_accumulation} x {d.world} process(es) = "
        f"{plan.global_batch} per step; {total_steps} steps ({steps_per_epoch} per epoch); strategy "
        f"{cfg.strategy}{f', activation checkpointing ({n_ckpt} blocks)' if n_ckpt else ''}")
    fpt = flops_per_token(model, spec.method.type, spec.dataset.max_length // 2)
    amp = autocast_dtype(cfg)
    strat = parallel.wrap(model, cfg, d, compute_dtype=amp)
    wrapped = strat.forward_model
    autocast = (lambda: torch.autocast(cfg.device, dtype=amp)) if amp is not None and not strat.sharded \
        else contextlib.nullcontext
    from transformers import get_scheduler

    strat.setup_optimizer(
        lambda params: torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay,
                                         fused=cfg.device == "cuda"),
        lambda opt: get_scheduler(t.scheduler, opt, num_warmup_steps=int(t.warmup_ratio * total_steps),
                                  num_training_steps=total_steps))

    # --- resume from the newest checkpoint, if any ---------------------------------------------------
    out = Path(cfg.output_dir)
    step = 0
    latest = ckpt.latest_checkpoint(out)
    if latest is not None:
        state = strat.load(latest, rank=d.rank)
        step = state["step"]
        log(f"resuming from checkpoint {latest.name} (step {step} of {total_steps})")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        _trim_history(out, step)
        if spectrum_scan is not None:
            _write_json(out / SPECTRUM_FILE, spectrum_scan)
    ref = None
    if objective == "dpo":
        with autocast():
            ref = _reference(out, wrapped, train, data.validation, plan.micro_batch, d, tokenizer.pad_token_id, step)

    def evaluate() -> dict:
        with autocast():
            if preference:
                return preference_eval(wrapped, data.validation, plan.micro_batch, d, tokenizer.pad_token_id, objective,
                                       spec.objective.beta, ref and ref["validation"], gsum)
            return {"eval_loss": eval_loss(wrapped, data.validation, plan.micro_batch, d, tokenizer.pad_token_id)}

    # --- observers: metrics endpoint, TensorBoard, progress ------------------------------------------
    metrics = TrainerMetrics(cfg.job.metadata.namespace or "", cfg.job.metadata.name, d.rank)
    if d.local_rank == 0:  # one endpoint per pod: rank 0's training gauges, each node's GPU memory
        metrics.serve(cfg.metrics_port)
    metrics.set(total_steps=total_steps, step=step, start_time_seconds=time.time(),
                checkpoint_interval_steps=spec.output.save_every_steps)
    writer = _tensorboard(out) if d.main else None
    progress = Progress(total_steps, start=step, every=t.log_every_steps) if d.main else None
    stop = _sigterm_flag()
    initial_eval = None
    if step == 0 and data.validation:
        initial_eval = evaluate()
        log(f"step 0: {_fmt(initial_eval)} (before training)")
        if d.main:
            _log_scalars(writer, out, {"step": 0, **initial_eval})

    # --- train ---------------------------------------------------------------------------------------
    last: dict[str, Any] = {}
    model.train()
    while step < total_steps:
        t0 = time.perf_counter()
        batches = _micro_batches(train, plan, step, steps_per_epoch, t.seed, d, tokenizer.pad_token_id, preference,
                                 padding_free)
        n_real = sum(b.pop("n_real") for b in batches)
        # global denominators first, so every micro-batch's loss is already normalised for the whole step
        if preference:
            n_pairs = sum(int(b["index"].numel()) for b in batches)
            n_tokens = sum(int((b["labels"][:len(b["labels"]) // 2, 1:] != -100).sum()) for b in batches)
            g_pairs, g_tokens, g_real = gsum([float(n_pairs), float(n_tokens), float(n_real)])
        else:
            n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
            g_tokens, g_real = gsum([float(n_tokens), float(n_real)])
        loss_sum, extra = 0.0, {"correct": 0.0, "margin": 0.0}
        for i, batch in enumerate(batches):
            is_last = i == len(batches) - 1
            with strat.accumulating(is_last), autocast():
                if preference:
                    terms = pair_terms(wrapped, batch, objective, spec.objective.beta, ref and ref["train"], d.device)
                    part = terms["pair_loss"] / max(g_pairs, 1.0) + terms["nll"] / max(g_tokens, 1.0)
                    extra["correct"] += terms["correct"]
                    extra["margin"] += terms["margin"]
                else:
                    part = _ce_sum(wrapped, batch, d.device) / max(g_tokens, 1.0)
                strat.backward(part * d.world, is_last)
            loss_sum += float(part.detach())
        grad_norm = strat.step(t.max_grad_norm)
        step += 1
        loss, correct, margin = gsum([loss_sum, extra["correct"], extra["margin"]])
        dt = time.perf_counter() - t0
        lr = strat.lr()
        last = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens_per_s": g_real / dt, "trainable_tokens_per_s": g_tokens / dt}
        if preference:
            last |= {"reward_accuracy": correct / max(g_pairs, 1.0), "reward_margin": margin / max(g_pairs, 1.0)}
        metrics.set(step=step, train_loss=loss, learning_rate=lr, grad_norm=grad_norm, epoch=step / steps_per_epoch,
                    tokens_per_second=g_real / dt, trainable_tokens_per_second=g_tokens / dt,
                    mfu_ratio=mfu(g_real / dt / d.world, fpt) if cfg.device == "cuda" else None,
                    eta_seconds=progress.eta(step) if progress else None)
        metrics.tokens.inc(g_real)
        metrics.gpu_memory()
        if d.main:
            progress.update(step, loss, lr, g_real / dt)
            _log_scalars(writer, out, last)
        if t.eval_every_steps and step % t.eval_every_steps == 0 and step < total_steps and data.validation:
            ev = evaluate()
            metrics.set(eval_loss=ev["eval_loss"])
            if d.main:
                progress.note(f"step {step}: {_fmt(ev)}")
                _log_scalars(writer, out, {"step": step, **ev})
        preempt = gsum([1.0 if stop["flag"] else 0.0])[0] > 0
        if step % spec.output.save_every_steps == 0 or preempt:
            strat.save(out, step, {"total_steps": total_steps}, spec.output.keep_last_checkpoints, d.rank,
                       lambda: barrier(d))
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
    if cfg.device == "cuda":  # peak allocated over load + training: rank 0's, and every rank's (a collective)
        peak = torch.cuda.max_memory_allocated(d.device) / 2 ** 30
        summary["peak_memory_gib"] = round(peak, 3)
        summary["peak_memory_gib_per_rank"] = [round(x, 3) for x in gsum([peak if r == d.rank else 0.0
                                                                           for r in range(d.world)])]
    if initial_eval is None and d.main:
        initial_eval = _history_eval_at_step0(out)
    if initial_eval is not None:
        summary |= {f"initial_{k}": v for k, v in initial_eval.items()}
    if data.validation:
        final = evaluate()
        summary |= {f"final_{k}" if k == "eval_loss" else k: v for k, v in final.items()}
        metrics.set(eval_loss=final["eval_loss"])
        if not preference and (d.main or strat.sharded):  # sharded: every rank joins the forwards
            with autocast():
                em = exact_match(model, tokenizer, data.validation, d.device)
            if d.main:
                summary["eval_exact_match"] = em
        if d.main:
            _log_scalars(writer, out, {"step": step, **final})
    if ckpt.latest_checkpoint(out) is None or ckpt.latest_checkpoint(out).name != f"{ckpt.PREFIX}{step:08d}":
        strat.save(out, step, {"total_steps": total_steps}, spec.output.keep_last_checkpoints, d.rank,
                   lambda: barrier(d))
    state_dict = strat.full_state_dict()  # collective for sharded strategies; None otherwise
    if d.main:
        if writer is not None:
            writer.close()
        summary = save_outputs(cfg, model, tokenizer, summary, state_dict=state_dict)
    barrier(d)
    return summary


# --- the pieces the loop uses ------------------------------------------------------------------------

def check_enough_data(n_train: int, plan: LaunchPlan) -> None:
    """Refuse a dataset smaller than one optimizer step (the plan never shrinks the step to fit the data).

    Raises:
        TrainerInputError: names the counts and what to change.
    """
    if n_train < plan.global_batch:
        from .errors import TrainerInputError

        raise TrainerInputError(
            f"spec.dataset: {n_train} training example(s) (or packed rows) is fewer than one optimizer step "
            f"needs ({plan.global_batch} = micro {plan.micro_batch} x accumulation {plan.gradient_accumulation} x "
            f"{plan.world_size} process(es)); lower spec.training.globalBatchSize or add data")


def _load_data(cfg: TrainerConfig, tokenizer):
    from .data import load_datasets

    spec = cfg.job.spec
    ds = spec.dataset.model_copy(update={"paths": cfg.dataset_paths, "validation_paths": cfg.validation_paths})
    return load_datasets(ds, tokenizer, seed=spec.training.seed, base_dir=Path(cfg.output_dir).parent,
                         objective=spec.objective.type)


def _micro_batches(train: list, plan: LaunchPlan, step: int, steps_per_epoch: int, seed: int, d: Dist,
                   pad_id: int, preference: bool = False, padding_free: bool = False) -> list[dict]:
    """This rank's micro-batches of global step `step`: a seeded permutation per epoch, sliced by rank.

    With `padding_free`, each micro-batch of (unpacked) examples is one row of them concatenated
    (spec.dataset.paddingFree): the same examples and targets, no pad tokens.
    """
    import torch

    from .data import collate, one_row

    epoch, pos = divmod(step, steps_per_epoch)
    g = torch.Generator().manual_seed(seed * 1000003 + epoch)
    perm = torch.randperm(len(train), generator=g).tolist()
    chunk = perm[pos * plan.global_batch:(pos + 1) * plan.global_batch]
    out = []
    for j in range(plan.gradient_accumulation):
        start = (j * d.world + d.rank) * plan.micro_batch
        examples = [train[i] for i in chunk[start:start + plan.micro_batch]]
        if preference:
            n_real = sum(2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples)
            out.append(collate_pairs(examples, pad_id) | {"n_real": n_real})
        else:
            rows = [one_row(examples)] if padding_free else examples
            out.append(collate(rows, pad_id) | {"n_real": sum(len(e["input_ids"]) for e in examples)})
    return out


REFERENCE_FILE = "reference_logps.pt"


def _reference(out: Path, model, train: list, validation: list, micro: int, d: Dist, pad_id: int, step: int) -> dict:
    """DPO's reference log-probs of the train and validation pairs: computed at step 0, reused on resume.

    They are kept in `checkpoints/` because after step 0 the policy no longer is the reference (full
    fine-tuning changes the very weights), so a resumed run must not recompute them.
    """
    import torch

    f = ckpt.checkpoints_dir(out) / REFERENCE_FILE
    if f.exists():
        return torch.load(f, map_location="cpu", weights_only=True)
    if step > 0:
        from .errors import TrainerInputError

        raise TrainerInputError(f"{f}: missing, so DPO cannot resume from step {step}; delete "
                                f"{ckpt.checkpoints_dir(out)} to start over")
    ref = {"train": reference_logps(model, train, micro, d, pad_id, lambda v: all_sum(v, d)),
           "validation": reference_logps(model, validation, micro, d, pad_id, lambda v: all_sum(v, d))
           if validation else None}
    if d.main:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        torch.save(ref, tmp)
        tmp.replace(f)
    return ref


def _fmt(ev: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in ev.items())


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(path)


def _ce_sum(model, batch: dict, device):
    """Summed next-token cross-entropy over the tokens with a target (labels != -100)."""
    import torch.nn.functional as F

    from . import attention, liger

    inputs = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    inputs |= attention.forward_kwargs(model, batch, device)  # packed rows under varlen: document bounds
    labels = batch["labels"].to(device)
    if liger.fused_loss(model):  # Liger's fused LM head + loss: no logits; it returns sum / num_items_in_batch
        return model(**inputs, labels=labels, num_items_in_batch=1).loss
    logits = model(**inputs).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100,
                           reduction="sum")


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
    row = {k: v for k, v in row.items() if v is not None}
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "step" and v is not None:
                writer.add_scalar(("eval/" if k.startswith("eval") else "train/") + k, v, row["step"])


def _history_eval_at_step0(out: Path):
    """The before-training eval metrics a resumed run logged in its first session, if any."""
    f = out / "metrics.jsonl"
    if not f.exists():
        return None
    for r in f.read_text(encoding="utf-8").splitlines():
        row = json.loads(r) if r else {}
        if row.get("step") == 0 and "eval_loss" in row:
            return {k: v for k, v in row.items() if k.startswith("eval_")}
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
