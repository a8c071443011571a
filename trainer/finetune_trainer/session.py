"""The parts every recipe shares: set up a run, resume it, observe its steps, checkpoint it, finish it.

A recipe (sft_recipe.py, preference_recipe.py) reads top to bottom: `open_session` (tokenizer, data, model,
strategy, optimizer, resume from the newest intact checkpoint of the same run, observers), its own training
loop calling `record_step` / `checkpoint_due` / `save_checkpoint`, then `finish` (outputs, manifest last).
Shared pieces, not flags: nothing here knows which objective runs (torchtune's "copy-paste-modify" over
inheritance, with the common parts as functions).
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from finetune_api.fingerprint import fingerprint, shaping_fields
from finetune_api.trainer_config import TrainerConfig

from . import checkpoint as ckpt
from . import history
from .distributed import Dist, all_sum
from .errors import TrainerInputError
from .faults import maybe_fail


class Preempted(Exception):
    """SIGTERM arrived (pod deleted, job suspended, Ctrl-C): a checkpoint was saved and the run stops."""


class NonFiniteLoss(TrainerInputError):
    """The loss or the gradient norm became NaN or infinite: the run stops before the update is applied."""


@dataclass
class Session:
    """One rank's view of a run in progress."""

    cfg: TrainerConfig
    d: Dist
    tokenizer: Any = None
    data: Any = None
    train: list = field(default_factory=list)
    model: Any = None
    strat: Any = None
    amp: Any = None
    step: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 1
    n_trainable: int = 0
    fpt: float = 0.0
    metrics: Any = None
    writer: Any = None
    progress: Any = None
    stop: dict = field(default_factory=dict)
    done: Optional[dict] = None  # the manifest's summary when this run's output is already complete

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def plan(self):
        return self.cfg.plan

    def log(self, text: str) -> None:
        if self.d.main:
            print(text, flush=True)

    def gsum(self, values: list[float]) -> list[float]:
        return all_sum(values, self.d)

    def autocast(self):
        """bf16 autocast over fp32 weights where the strategy does not cast itself (FSDP2 does)."""
        import torch

        if self.amp is not None and not self.strat.sharded:
            return torch.autocast(self.cfg.device, dtype=self.amp)
        return contextlib.nullcontext()


def open_session(cfg: TrainerConfig, d: Dist, preference: bool) -> Session:
    """Everything before the first step; `session.done` is set instead when the output is already complete.

    Raises:
        TrainerInputError (and subclasses): bad data, model, too little data, a checkpoint of another run.
    """
    import torch

    from . import liger, strategy
    from .flops import flops_per_token
    from .metrics import TrainerMetrics
    from .modeling import (apply_method, autocast_dtype, check_targets, enable_checkpointing, load_model,
                           load_tokenizer, meta_model)
    from .outputs import SPECTRUM_FILE
    from .progress import Progress
    from .recipe import check_enough_data

    s = Session(cfg, d)
    spec, t, plan = cfg.job.spec, cfg.job.spec.training, cfg.plan
    torch.manual_seed(t.seed)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    s.tokenizer = load_tokenizer(cfg)
    maybe_fail("data", d.rank)
    s.data = _load_data(cfg, s.tokenizer)
    s.log(s.data.report.summary())
    s.train = [dict(e, index=i) for i, e in enumerate(s.data.train)] if preference else s.data.train
    check_enough_data(len(s.train), plan)
    s.steps_per_epoch = len(s.train) // plan.global_batch
    s.total_steps = t.max_steps or max(1, math.ceil((t.epochs or 1.0) * s.steps_per_epoch))
    s.done = _already_complete(s)
    if s.done is not None:
        s.log(f"already complete: {s.out} holds this run's output ({s.done['steps']} steps, manifest.json); "
              "nothing to do")
        return s
    check_targets(meta_model(cfg), cfg)  # before any weight loads
    from . import sharded_load

    in_shards = sharded_load.applies(cfg)  # FSDP: built on the meta device, each rank loads only its shards
    model = sharded_load.build_meta(cfg) if in_shards else load_model(cfg, d.local_rank)
    model, spectrum_scan = apply_method(model, cfg, rank=d.rank, world=d.world, all_sum=s.gsum)
    n_ckpt = enable_checkpointing(model, plan.checkpointing, plan.checkpoint_layers)
    if spec.method.type != "qlora" and not in_shards:  # a 4-bit model is placed by device_map at load
        model.to(d.device)
    s.model = model
    s.n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    s.log(f"model: {n_total:,} parameters, {s.n_trainable:,} trainable ({100 * s.n_trainable / n_total:.2f}%); "
          f"batch: micro {plan.micro_batch} x accumulation {plan.gradient_accumulation} x {d.world} process(es) = "
          f"{plan.global_batch} per step; {s.total_steps} steps ({s.steps_per_epoch} per epoch); strategy "
          f"{cfg.strategy}{f', activation checkpointing ({n_ckpt} blocks)' if n_ckpt else ''}"
          + (f"; kernels: {liger.describe(model)}" if cfg.device == "cuda" else ""))
    s.fpt = flops_per_token(model, spec.method.type, spec.dataset.max_length // 2)
    s.amp = autocast_dtype(cfg)
    s.strat = strategy.wrap(model, cfg, d, compute_dtype=s.amp)
    if in_shards:
        t0 = time.perf_counter()
        sharded_load.materialize(model, cfg, d)
        s.log(f"loaded into {d.world} shard(s) in {time.perf_counter() - t0:.1f} s"
              + (" (random weights: FINETUNE_RANDOM_WEIGHTS)" if sharded_load.random_weights() else ""))
    from transformers import get_scheduler

    s.strat.setup_optimizer(
        lambda params: torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay,
                                         fused=cfg.device == "cuda"),
        lambda opt: get_scheduler(t.scheduler, opt, num_warmup_steps=int(t.warmup_ratio * s.total_steps),
                                  num_training_steps=s.total_steps))
    _resume(s)
    if d.main:
        s.out.mkdir(parents=True, exist_ok=True)
        history.trim(s.out, s.step)
        if spectrum_scan is not None:
            from .recipe import write_json

            write_json(s.out / SPECTRUM_FILE, spectrum_scan)
    s.metrics = TrainerMetrics(cfg.job.metadata.namespace or "", cfg.job.metadata.name, d.rank)
    if d.local_rank == 0:  # one endpoint per pod: rank 0's training gauges, each node's GPU memory
        s.metrics.serve(cfg.metrics_port)
    install_stop_handler()  # in-process runs (tests) that did not come through worker.main
    s.metrics.set(total_steps=s.total_steps, step=s.step, start_time_seconds=time.time(),
                  checkpoint_interval_steps=spec.output.save_every_steps)
    s.writer = history.tensorboard(s.out) if d.main else None
    s.progress = Progress(s.total_steps, start=s.step, every=t.log_every_steps) if d.main else None
    s.stop = STOP
    if STOP["flag"]:  # stopped during set-up: nothing trained since the last checkpoint, nothing to save
        raise Preempted(f"stopped before training resumed (step {s.step}); nothing new to save")
    return s


def _load_data(cfg: TrainerConfig, tokenizer):
    from .data import load_datasets

    spec = cfg.job.spec
    ds = spec.dataset.model_copy(update={"paths": cfg.dataset_paths, "validation_paths": cfg.validation_paths})
    return load_datasets(ds, tokenizer, seed=spec.training.seed, base_dir=Path(cfg.output_dir).parent,
                         objective=spec.objective.type)


def _already_complete(s: Session) -> Optional[dict]:
    """The manifest's metrics when the output folder holds this very run, finished (re-running is a no-op)."""
    import json

    from .manifest import MANIFEST

    f = s.out / MANIFEST
    if not f.exists():
        return None
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except ValueError:
        return None
    steps = (doc.get("metrics") or {}).get("steps")
    if doc.get("fingerprint") == fingerprint(s.cfg.job.spec) and isinstance(steps, int) and steps >= s.total_steps:
        return dict(doc["metrics"], output_path=str(s.out))
    return None


def _resume(s: Session) -> None:
    """Continue from the newest intact checkpoint of this run (named and skipped when damaged)."""
    if s.d.main:
        ckpt.remove_partial(s.out)
    latest = ckpt.choose_for_resume(s.out, s.d, s.log)
    if latest is None:
        return
    ckpt.check_same_run(latest, shaping_fields(s.cfg.job.spec))
    step = ckpt.read_manifest(latest)["step"]
    if step > s.total_steps:
        raise ckpt.CheckpointMismatch(
            f"spec.output.path '{s.out}' holds a checkpoint at step {step}, past this spec's {s.total_steps} steps; "
            "raise spec.training.maxSteps (or epochs), or choose another output path")
    s.strat.read_checkpoint(latest, s.d.rank)
    ckpt.restore_rng(latest, s.d.rank)
    s.step = step
    s.log(f"resuming from checkpoint {latest.name} (step {step} of {s.total_steps})")


def guard(s: Session, loss: float) -> Callable[[float], None]:
    """The check a strategy runs on the gradient norm before updating: stop on NaN/inf, naming step and cause."""
    norm_may_be_unknown = s.cfg.strategy.startswith("deepspeed")  # its engine may not report one

    def check(norm: float) -> None:
        bad = []
        if not math.isfinite(loss):
            bad.append(f"loss {loss}")
        if not math.isfinite(norm) and not (math.isnan(norm) and norm_may_be_unknown):
            bad.append(f"gradient norm {norm}")
        if bad:
            last = ckpt.latest_checkpoint(s.out)
            raise NonFiniteLoss(
                f"step {s.step + 1}: {' and '.join(bad)} (learning rate {s.strat.lr():.3g}, spec.training."
                f"maxGradNorm {s.cfg.job.spec.training.max_grad_norm}); the run stopped before writing anything of "
                f"this step. Lower spec.training.learningRate or set maxGradNorm (e.g. 1.0)"
                + (f"; the newest checkpoint ({last.name}) is intact" if last else ""))
    return check


def record_step(s: Session, row: dict, g_real: float, g_tokens: float, dt: float) -> None:
    """Metrics endpoint, progress line, metrics.jsonl and TensorBoard for the step just taken."""
    from .flops import mfu

    s.metrics.set(step=s.step, train_loss=row["loss"], learning_rate=row["lr"], grad_norm=row["grad_norm"],
                  epoch=s.step / s.steps_per_epoch, tokens_per_second=g_real / dt,
                  trainable_tokens_per_second=g_tokens / dt,
                  mfu_ratio=mfu(g_real / dt / s.d.world, s.fpt) if s.cfg.device == "cuda" else None,
                  eta_seconds=s.progress.eta(s.step) if s.progress else None)
    s.metrics.tokens.inc(g_real)
    s.metrics.gpu_memory()
    if s.d.main:
        s.progress.update(s.step, row["loss"], row["lr"], g_real / dt)
        history.log_row(s.writer, s.out, row)


def record_eval(s: Session, ev: dict) -> None:
    """An evaluation's results: the metric, the progress note, the history row."""
    s.metrics.set(eval_loss=ev["eval_loss"])
    if s.d.main:
        s.progress.note(f"step {s.step}: {fmt(ev)}")
        history.log_row(s.writer, s.out, {"step": s.step, **ev})


def fmt(ev: dict) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in ev.items())


def checkpoint_if_due(s: Session) -> None:
    """Save on the spec's interval, or when a stop was requested (then raise Preempted): a collective."""
    preempt = s.gsum([1.0 if s.stop["flag"] else 0.0])[0] > 0
    if s.step % s.cfg.job.spec.output.save_every_steps == 0 or preempt:
        save_checkpoint(s)
    if preempt:
        s.log(f"SIGTERM: saved checkpoint at step {s.step}; stopping (resume continues from here)")
        raise Preempted(f"preempted at step {s.step}; checkpoint saved")


def save_checkpoint(s: Session) -> None:
    """Checkpoint the current step (collective): space checked, atomic, checksummed, fingerprinted."""
    maybe_fail("checkpoint", s.d.rank, s.step)
    prev = ckpt.latest_checkpoint(s.out)
    need = ckpt.checkpoint_bytes(prev) if prev else (s.plan.disk.checkpoint_bytes if s.plan.disk else 0)
    spec = s.cfg.job.spec

    def files(tmp: Path) -> None:
        maybe_fail("enospc", s.d.rank, s.step)
        s.strat.write_checkpoint(tmp, s.d.rank)

    meta = {"total_steps": s.total_steps, "strategy": s.cfg.strategy, "fingerprint": fingerprint(spec),
            "shaping_fields": shaping_fields(spec)}
    ckpt.write(s.out, s.step, files, meta, spec.output.keep_last_checkpoints, s.d, need)
    s.metrics.checkpoints.inc()
    s.metrics.set(last_checkpoint_step=s.step)


def summary_of(s: Session, last: dict, initial: Optional[dict]) -> dict[str, Any]:
    """What every recipe reports: steps, final loss, trainable parameters, the data report, the eval before
    training (this session's, or the first session's from the history of a resumed run)."""
    summary: dict[str, Any] = {"steps": s.step, "final_loss": last.get("loss"), "trainable_parameters": s.n_trainable,
                               "data": s.data.report.as_dict()}
    if initial is None and s.d.main:
        initial = history.eval_at_step0(s.out)
    if initial is not None:
        summary |= {f"initial_{k}": v for k, v in initial.items()}
    return summary


def finish(s: Session, summary: dict[str, Any]) -> dict[str, Any]:
    """After the last step: peak memory, the optional final checkpoint, the outputs (manifest last)."""
    import torch

    from .outputs import save_outputs

    if s.progress:
        s.progress.close()
    if s.cfg.device == "cuda":  # peak allocated over load + training: rank 0's, and every rank's (a collective)
        peak = torch.cuda.max_memory_allocated(s.d.device) / 2 ** 30
        summary["peak_memory_gib"] = round(peak, 3)
        summary["peak_memory_gib_per_rank"] = [round(x, 3) for x in s.gsum([peak if r == s.d.rank else 0.0
                                                                             for r in range(s.d.world)])]
    if s.cfg.job.spec.output.save_final_checkpoint and (ckpt.latest_checkpoint(s.out) is None or
                                                         ckpt.read_manifest(ckpt.latest_checkpoint(s.out))["step"]
                                                         != s.step):
        save_checkpoint(s)
    if s.writer is not None:
        s.writer.close()
    t0 = time.perf_counter()
    summary = save_outputs(s.cfg, s.strat, s.model, s.tokenizer, summary, s.d)
    s.log(f"output written in {time.perf_counter() - t0:.1f} s")
    return summary


STOP = {"flag": False}  # set by SIGTERM or SIGINT (the launcher forwards one; a terminal's Ctrl-C sends the other)


def install_stop_handler() -> None:
    """Turn SIGTERM/SIGINT into a stop request the training loop honours at the end of the current step."""
    def handler(signum, frame):
        STOP["flag"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (tests): no handler
            pass
