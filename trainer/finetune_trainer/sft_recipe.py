"""The SFT and CPT recipe: next-token loss on the answer tokens (SFT) or on every token (CPT), top to bottom.

setup (session.open_session) -> evaluate before training -> train: per step, this rank's micro-batches, the
loss summed and normalised by the step's global target-token count, one optimizer step guarded against
NaN/inf, metrics, periodic evaluation and checkpoints -> final evaluation and exact match -> outputs
(session.finish, manifest last). The objectives differ only in which tokens have targets, which the data
pipeline decides; the loss is losses.ce_sum for both.
"""

from __future__ import annotations

import time
from typing import Any

from finetune_api.trainer_config import TrainerConfig

from . import history
from . import session as ses
from .distributed import Dist
from .evaluation import eval_loss, exact_match
from .faults import maybe_fail, nan_loss
from .losses import ce_sum, target_tokens
from .modeling import uses_padding_free


def run(cfg: TrainerConfig, d: Dist) -> dict[str, Any]:
    """Train as `cfg` says and write the output; returns the summary (also in manifest.json)."""
    s = ses.open_session(cfg, d, preference=False)
    if s.done is not None:
        return s.done
    spec, t = cfg.job.spec, cfg.job.spec.training
    pad = s.tokenizer.pad_token_id
    padding_free = uses_padding_free(cfg)

    def evaluate() -> dict:
        with s.autocast():
            return {"eval_loss": eval_loss(s.strat.forward_model, s.data.validation, s.plan.micro_batch, d, pad)}

    initial = None
    if s.step == 0 and s.data.validation:
        initial = evaluate()
        s.log(f"step 0: {ses.fmt(initial)} (before training)")
        if d.main:
            history.log_row(s.writer, s.out, {"step": 0, **initial})

    last: dict[str, Any] = {}
    s.model.train()
    while s.step < s.total_steps:
        t0 = time.perf_counter()
        from .recipe import micro_batches

        batches = micro_batches(s.train, s.plan, s.step, s.steps_per_epoch, t.seed, d, pad,
                                padding_free=padding_free)
        n_real = sum(b.pop("n_real") for b in batches)
        g_tokens, g_real = s.gsum([float(sum(target_tokens(b) for b in batches)), float(n_real)])
        loss_sum = 0.0
        for i, batch in enumerate(batches):
            is_last = i == len(batches) - 1
            with s.strat.accumulating(is_last), s.autocast():
                part = ce_sum(s.strat.forward_model, batch, d.device) / max(g_tokens, 1.0)
                if nan_loss(d.rank, s.step + 1):
                    part = part * float("nan")
                s.strat.backward(part * d.world, is_last)
            loss_sum += float(part.detach())
        loss = s.gsum([loss_sum])[0]
        maybe_fail("step", d.rank, s.step + 1)
        maybe_fail("hang", d.rank, s.step + 1)
        grad_norm = s.strat.step(t.max_grad_norm, ses.guard(s, loss))
        s.step += 1
        dt = time.perf_counter() - t0
        last = {"step": s.step, "loss": loss, "lr": s.strat.lr(), "grad_norm": grad_norm,
                "tokens_per_s": g_real / dt, "trainable_tokens_per_s": g_tokens / dt, "time": round(time.time(), 3)}
        ses.record_step(s, last, g_real, g_tokens, dt)
        if t.eval_every_steps and s.step % t.eval_every_steps == 0 and s.step < s.total_steps and s.data.validation:
            ses.record_eval(s, evaluate())
        ses.checkpoint_if_due(s)

    summary = ses.summary_of(s, last, initial)
    if s.data.validation:
        final = evaluate()
        summary["final_eval_loss"] = final["eval_loss"]
        s.metrics.set(eval_loss=final["eval_loss"])
        if d.main or s.strat.sharded:  # sharded: every rank joins the forwards
            with s.autocast():
                em = exact_match(s.model, s.tokenizer, s.data.validation, d.device)
            if d.main:
                summary["eval_exact_match"] = em
        if d.main:
            history.log_row(s.writer, s.out, {"step": s.step, **final})
    return ses.finish(s, summary)
