"""DPO and ORPO: the losses, the batches they read, reference log-probs and the preference metrics.

Why our loss in our loop rather than trl's DPOTrainer / ORPOTrainer (trl 1.16; ORPO lives in
`trl.experimental.orpo`): the recipe already owns what a run needs — exact normalisation across accumulation
and ranks, atomic resumable checkpoints, the manifest, metrics and the termination message — and trl's
trainers would bring a second copy of each (transformers' Trainer) that we would have to bend to the same
contracts. Given per-sequence log-probs the losses are a few lines each; tests/unit/trainer/test_preference.py
checks them against trl's own code on the same inputs.

Maths (pairs i; log pi(y|x) summed over answer tokens; beta = spec.objective.beta):

    DPO:   l_i = -log sigmoid(beta * [(log pi(yw|x) - log ref(yw|x)) - (log pi(yl|x) - log ref(yl|x))])
           reward(y) = beta * (log pi(y|x) - log ref(y|x))
    ORPO:  with mean-token log-probs a_w, a_l and log odds(y) = a - log(1 - exp(a)),
           l = NLL(yw) - beta * log sigmoid(log odds(yw) - log odds(yl)),   reward(y) = beta * a

ORPO's NLL is taken over the chosen *answer* tokens (the paper's L_SFT); trl's implementation also trains on
the prompt tokens. DPO's reference log-probs are computed once before training with the policy itself (at
step 0 it *is* the reference: LoRA's B is zero, full weights unchanged) and kept beside the checkpoints, so no
second model sits in memory and every method and strategy gets DPO the same way (trl's
`precompute_ref_log_probs`).
"""

from __future__ import annotations

IGNORE = -100


def collate_pairs(batch: list[dict], pad_id: int) -> dict:
    """Stack preference examples as 2B rows: chosen answers first, then rejected, right-padded.

    Args:
        batch: `{"prompt_ids", "chosen_ids", "rejected_ids"}` examples (plus `index`, their position in the
            dataset, used to look up reference log-probs).
        pad_id: the pad token id.

    Returns:
        `input_ids`, `attention_mask`, `labels` (answer tokens only) of shape (2B, longest), and `index` (B,).
    """
    import torch

    rows = [e["prompt_ids"] + e[k] for k in ("chosen_ids", "rejected_ids") for e in batch]
    label_rows = [[IGNORE] * len(e["prompt_ids"]) + e[k] for k in ("chosen_ids", "rejected_ids") for e in batch]
    longest = max(len(r) for r in rows)
    ids = [r + [pad_id] * (longest - len(r)) for r in rows]
    labels = [r + [IGNORE] * (longest - len(r)) for r in label_rows]
    mask = [[1] * len(r) + [0] * (longest - len(r)) for r in rows]
    out = {k: torch.tensor(v, dtype=torch.long) for k, v in (("input_ids", ids), ("attention_mask", mask),
                                                              ("labels", labels))}
    out["index"] = torch.tensor([e.get("index", -1) for e in batch], dtype=torch.long)
    return out


def sequence_logps(logits, labels):
    """(sum of log p over labelled tokens, number of labelled tokens) per row, labels shifted by one."""
    import torch

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels != IGNORE
    safe = labels.masked_fill(~mask, 0)
    per_token = torch.gather(logits.log_softmax(-1), 2, safe.unsqueeze(-1)).squeeze(-1)
    return (per_token * mask).sum(-1), mask.sum(-1)


def dpo_losses(chosen, rejected, ref_chosen, ref_rejected, beta: float):
    """Per-pair DPO (sigmoid) losses and the implicit rewards (chosen, rejected)."""
    import torch.nn.functional as F

    chosen_r, rejected_r = beta * (chosen - ref_chosen), beta * (rejected - ref_rejected)
    return -F.logsigmoid(chosen_r - rejected_r), chosen_r.detach(), rejected_r.detach()


def log1mexp(x):
    """log(1 - exp(x)) for x < 0, numerically stable on both sides of -log 2."""
    import torch

    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_ratio_losses(chosen_mean, rejected_mean, beta: float):
    """Per-pair ORPO odds-ratio term beta * -log sigmoid(log odds ratio), and rewards (chosen, rejected)."""
    import torch.nn.functional as F

    c, r = chosen_mean.float(), rejected_mean.float()
    log_odds = (c - r) - (log1mexp(c) - log1mexp(r))
    return -beta * F.logsigmoid(log_odds), (beta * c).detach(), (beta * r).detach()


def pair_terms(model, batch: dict, objective: str, beta: float, ref: dict | None, device) -> dict:
    """Forward 2B rows once and return the sums the loss and metrics need, for this micro-batch.

    Returns:
        `pair_loss` (sum over pairs of the per-pair term, tensor), `nll` (ORPO: summed chosen-answer NLL,
        tensor; DPO: 0), `chosen_logp`/`rejected_logp` (summed log-probs, per pair), `correct` and `margin`
        (sums over pairs of reward accuracy and margin).
    """
    import torch

    inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}
    logits = model(**inputs).logits
    logp, n_tok = sequence_logps(logits, batch["labels"].to(device))
    b = logp.shape[0] // 2
    chosen, rejected = logp[:b], logp[b:]
    if objective == "dpo":
        idx = batch["index"]
        ref_c = ref["chosen"][idx].to(device, torch.float32)
        ref_r = ref["rejected"][idx].to(device, torch.float32)
        per_pair, rc, rr = dpo_losses(chosen, rejected, ref_c, ref_r, beta)
        nll = logits.new_zeros(())
    else:
        n_c, n_r = n_tok[:b].clamp(min=1), n_tok[b:].clamp(min=1)
        per_pair, rc, rr = orpo_ratio_losses(chosen / n_c, rejected / n_r, beta)
        nll = -chosen.sum()
    return {"pair_loss": per_pair.sum(), "nll": nll, "chosen_logp": chosen.detach(), "rejected_logp": rejected.detach(),
            "correct": float((rc > rr).sum()), "margin": float((rc - rr).sum()),
            "chosen_tokens": float(n_tok[:b].sum())}


def shares(n: int, micro: int, rank: int, world: int) -> list[list[int]]:
    """Index batches of this rank's share of `n` examples, the *same number* of batches on every rank.

    Sharded models (FSDP2, ZeRO-3) run collectives in every forward, so a rank with one batch fewer would hang:
    a rank whose share ran out gets empty batches, for which callers run a dummy forward and discard it.
    """
    per_rank = -(-n // world)
    mine = list(range(rank * per_rank, min(n, (rank + 1) * per_rank)))
    batches = [mine[i:i + micro] for i in range(0, per_rank, micro)]
    return [b if b else [] for b in batches]


def reference_logps(model, examples: list[dict], micro: int, d, pad_id: int, all_sum) -> dict:
    """Summed answer log-probs of every example under `model` in eval mode (every rank computes a share).

    Returns:
        `{"chosen": float tensor (N,), "rejected": float tensor (N,)}` on CPU, identical on all ranks.
    """
    import torch

    n = len(examples)
    out_c, out_r = [0.0] * n, [0.0] * n
    was = model.training
    model.eval()
    with torch.no_grad():
        for idx in shares(n, micro, d.rank, d.world):
            run = idx or [0]  # a rank with nothing left still joins the forward (sharded models)
            batch = collate_pairs([examples[i] for i in run], pad_id)
            logits = model(**{k: batch[k].to(d.device) for k in ("input_ids", "attention_mask")}).logits
            logp, _ = sequence_logps(logits, batch["labels"].to(d.device))
            b = len(run)
            for j, i in enumerate(idx):
                out_c[i], out_r[i] = float(logp[j]), float(logp[b + j])
    model.train(was)
    both = all_sum(out_c + out_r)
    return {"chosen": torch.tensor(both[:n], dtype=torch.float64), "rejected": torch.tensor(both[n:], dtype=torch.float64)}


def preference_eval(model, examples: list[dict], micro: int, d, pad_id: int, objective: str, beta: float,
                    ref: dict | None, all_sum) -> dict:
    """Loss, preference (reward) accuracy and mean reward margin over held-out pairs, all ranks together."""
    import torch

    n = len(examples)
    tot = {"loss": 0.0, "nll": 0.0, "tokens": 0.0, "correct": 0.0, "margin": 0.0, "pairs": 0.0}
    was = model.training
    model.eval()
    with torch.no_grad():
        for idx in shares(n, micro, d.rank, d.world):
            run = idx or [0]
            batch = collate_pairs([dict(examples[i], index=i) for i in run], pad_id)
            t = pair_terms(model, batch, objective, beta, ref, d.device)
            if not idx:
                continue
            tot["loss"] += float(t["pair_loss"])
            tot["nll"] += float(t["nll"])
            tot["tokens"] += t["chosen_tokens"]
            tot["correct"] += t["correct"]
            tot["margin"] += t["margin"]
            tot["pairs"] += len(idx)
    model.train(was)
    loss, nll, tokens, correct, margin, pairs = all_sum([tot[k] for k in ("loss", "nll", "tokens", "correct",
                                                                           "margin", "pairs")])
    pairs = max(pairs, 1.0)
    value = loss / pairs + (nll / max(tokens, 1.0) if objective == "orpo" else 0.0)
    return {"eval_loss": value, "eval_preference_accuracy": correct / pairs, "eval_reward_margin": margin / pairs}
