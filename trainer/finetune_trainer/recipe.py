"""Running a fine-tune in one process: join the group, run the objective's recipe, leave the group on success.

The recipes read top to bottom, one per kind of objective (sft_recipe.py for SFT/CPT, preference_recipe.py
for DPO/ORPO), sharing the set-up, checkpoint and output pieces of session.py rather than flags. Why our own
loop rather than transformers' Trainer or trl's SFTTrainer: the run must (1) count trainable tokens exactly
and normalise the loss by them across accumulation and ranks, so one process and N processes give the same
curve; (2) resume a preempted run at the exact step, data position and RNG state from an atomic, checksummed
checkpoint; (3) write the output atomically with the manifest last and never hang on a failed peer; (4) feed
our metrics, progress and termination message. Those are the parts Trainer hides. Model loading, adapters
(peft), schedulers (transformers) and the data pipeline are the well-kept libraries'.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finetune_api.trainer_config import LaunchPlan, TrainerConfig

from .distributed import Dist, init_distributed, shutdown
from .session import NonFiniteLoss, Preempted  # noqa: F401  (what callers catch)


def run(cfg: TrainerConfig) -> dict[str, Any]:
    """Train as `cfg` says and write the output; returns the summary (also in manifest.json).

    Raises:
        UserError (TrainerInputError, DataError, ...): bad data, model or options (one clean line for the user).
        Preempted: stopped by SIGTERM after saving a checkpoint.
    """
    d = init_distributed(cfg.device, cfg.job.spec.distributed.timeout_seconds)
    if cfg.job.spec.objective.is_preference:
        from .preference_recipe import run as recipe
    else:
        from .sft_recipe import run as recipe
    summary = recipe(cfg, d)
    shutdown(d)  # only after every rank succeeded: a failed rank leaves without waiting on its peers (worker.py)
    return summary


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


def micro_batches(train: list, plan: LaunchPlan, step: int, steps_per_epoch: int, seed: int, d: Dist,
                   pad_id: int, preference: bool = False, padding_free: bool = False) -> list[dict]:
    """This rank's micro-batches of global step `step`: a seeded permutation per epoch, sliced by rank.

    With `padding_free`, each micro-batch of (unpacked) examples is one row of them concatenated
    (spec.dataset.paddingFree): the same examples and targets, no pad tokens.
    """
    import torch

    from .data import collate, one_row
    from .preference import collate_pairs

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


def write_json(path: Path, doc: dict) -> None:
    """Write `doc` atomically (temp + rename)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    tmp.replace(path)
