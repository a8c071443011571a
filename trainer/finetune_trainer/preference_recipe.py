"""The DPO and ORPO recipe: preference pairs, top to bottom.

setup (session.open_session) -> DPO's reference log-probs (computed once with the policy at step 0, kept beside
the checkpoints) -> evaluate before training -> train: per step, this rank's pairs, each micro-batch's pair loss
normalised by the step's global pair count (plus ORPO's NLL by its global answer-token count), one guarded
optimizer step, reward accuracy and margin, periodic evaluation and checkpoints -> final evaluation ->
outputs (session.finish). The losses are preference.py's, tested equal to trl's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from finetune_api.trainer_config import TrainerConfig

from . import checkpoint as ckpt
from . import history
from . import session as ses
from .distributed import Dist, all_sum
from .faults import maybe_fail, nan_loss
from .preference import pair_terms, preference_eval, reference_logps

REFERENCE_FILE = "reference_logps.pt"


def run(cfg: TrainerConfig, d: Dist) -> dict[str, Any]:
    """Train as `cfg` says and write the output; returns the summary (also in manifest.json)."""
    s = ses.open_session(cfg, d, preference=True)
    if s.done is not None:
        return s.done
    spec, t = cfg.job.spec, cfg.job.spec.training
    objective, beta = spec.objective.type, spec.objective.beta
    pad = s.tokenizer.pad_token_id
    ref = None
    if objective == "dpo":
        with s.autocast():
            ref = _reference(s, pad)

    def evaluate() -> dict:
        with s.autocast():
            return preference_eval(s.strat.forward_model, s.data.validation, s.plan.micro_batch, d, pad, objective,
                                   beta, ref and ref["validation"], s.gsum)

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

        batches = micro_batches(s.train, s.plan, s.step, s.steps_per_epoch, t.seed, d, pad, preference=True)
        n_real = sum(b.pop("n_real") for b in batches)
        n_pairs = sum(int(b["index"].numel()) for b in batches)
        n_tokens = sum(int((b["labels"][:len(b["labels"]) // 2, 1:] != -100).sum()) for b in batches)
        g_pairs, g_tokens, g_real = s.gsum([float(n_pairs), float(n_tokens), float(n_real)])
        loss_sum, correct, margin = 0.0, 0.0, 0.0
        for i, batch in enumerate(batches):
            is_last = i == len(batches) - 1
            with s.strat.accumulating(is_last), s.autocast():
                terms = pair_terms(s.strat.forward_model, batch, objective, beta, ref and ref["train"], d.device)
                part = terms["pair_loss"] / max(g_pairs, 1.0) + terms["nll"] / max(g_tokens, 1.0)
                if nan_loss(d.rank, s.step + 1):
                    part = part * float("nan")
                s.strat.backward(part * d.world, is_last)
            loss_sum += float(part.detach())
            correct += terms["correct"]
            margin += terms["margin"]
        loss, correct, margin = s.gsum([loss_sum, correct, margin])
        maybe_fail("step", d.rank, s.step + 1)
        grad_norm = s.strat.step(t.max_grad_norm, ses.guard(s, loss))
        s.step += 1
        dt = time.perf_counter() - t0
        last = {"step": s.step, "loss": loss, "lr": s.strat.lr(), "grad_norm": grad_norm,
                "tokens_per_s": g_real / dt, "trainable_tokens_per_s": g_tokens / dt,
                "reward_accuracy": correct / max(g_pairs, 1.0), "reward_margin": margin / max(g_pairs, 1.0),
                "time": round(time.time(), 3)}
        ses.record_step(s, last, g_real, g_tokens, dt)
        if t.eval_every_steps and s.step % t.eval_every_steps == 0 and s.step < s.total_steps and s.data.validation:
            ses.record_eval(s, evaluate())
        ses.checkpoint_if_due(s)

    summary = ses.summary_of(s, last, initial)
    if s.data.validation:
        final = evaluate()
        summary |= {"final_eval_loss" if k == "eval_loss" else k: v for k, v in final.items()}
        s.metrics.set(eval_loss=final["eval_loss"])
        if d.main:
            history.log_row(s.writer, s.out, {"step": s.step, **final})
    return ses.finish(s, summary)


def _reference(s: ses.Session, pad: int) -> dict:
    """DPO's reference log-probs of the train and validation pairs: computed at step 0, reused on resume.

    They are kept in `checkpoints/` because after step 0 the policy no longer is the reference (full
    fine-tuning changes the very weights), so a resumed run must not recompute them.
    """
    import torch

    f = ckpt.checkpoints_dir(s.out) / REFERENCE_FILE
    if f.exists():
        return torch.load(f, map_location="cpu", weights_only=True)
    if s.step > 0:
        from .errors import TrainerInputError

        raise TrainerInputError(f"{f}: missing, so DPO cannot resume from step {s.step}; delete "
                                f"{ckpt.checkpoints_dir(s.out)} to start over")
    d, micro, model = s.d, s.plan.micro_batch, s.strat.forward_model
    ref = {"train": reference_logps(model, s.train, micro, d, pad, lambda v: all_sum(v, d)),
           "validation": reference_logps(model, s.data.validation, micro, d, pad, lambda v: all_sum(v, d))
           if s.data.validation else None}
    if d.main:
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(f) + ".tmp")
        torch.save(ref, tmp)
        tmp.replace(f)
    return ref
