"""DPO and ORPO losses equal trl's on the same inputs; pair batches and log-probs are what the losses assume."""

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from finetune_trainer.preference import (collate_pairs, dpo_losses, orpo_ratio_losses, sequence_logps, shares)

pytestmark = pytest.mark.filterwarnings("ignore:You are importing from .trl.experimental.")


def _logits_and_labels(seed=0, rows=6, length=9, vocab=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=g)
    labels = torch.randint(0, vocab, (rows, length), generator=g)
    labels[:, :3] = -100
    labels[1, 7:] = -100
    return logits, labels


def test_sequence_logps_match_trls_batch_logps():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    logits, labels = _logits_and_labels()
    ours, n = sequence_logps(logits, labels)
    theirs = ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=False)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert torch.allclose(ours / n, ORPOTrainer.get_batch_logps(logits, labels, average_log_prob=True), atol=1e-5)


def test_orpo_odds_ratio_term_matches_trl():
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    g = torch.Generator().manual_seed(1)
    chosen, rejected = -torch.rand(8, generator=g) * 3, -torch.rand(8, generator=g) * 3
    stub = SimpleNamespace(beta=0.25, accelerator=SimpleNamespace(device="cpu"))
    losses, c_r, r_r, _, _ = ORPOTrainer.odds_ratio_loss(stub, chosen, rejected)
    ours, oc, orr = orpo_ratio_losses(chosen, rejected, 0.25)
    assert torch.allclose(ours, -losses, atol=1e-6)  # trl returns beta * log sigmoid; its loss subtracts the mean
    assert torch.allclose(oc, c_r) and torch.allclose(orr, r_r)


class _Outputs(SimpleNamespace):
    pass


def _trl_dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta):
    """trl 1.16's DPOTrainer._compute_loss (sigmoid loss, precomputed reference) driven with a stub model whose
    per-token log-probs put each sequence's whole log-prob on its first completion token."""
    from trl.trainer.dpo_trainer import DPOTrainer

    b = chosen.numel()
    per_token = torch.zeros(2 * b, 4)
    per_token[:, 1] = torch.cat([chosen, rejected])
    mask = torch.zeros(2 * b, 5, dtype=torch.long)
    mask[:, 2] = 1
    out = _Outputs(log_probs=per_token, entropy=torch.zeros(2 * b, 4), mean_logits=torch.zeros(2 * b, 4),
                   is_top1=torch.zeros(2 * b, 4, dtype=torch.bool))
    ident = lambda t: t  # noqa: E731
    stub = SimpleNamespace(
        model=SimpleNamespace(training=False), accelerator=SimpleNamespace(device="cpu", gather_for_metrics=ident,
                                                                           gather=ident),
        aux_loss_enabled=False, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
        loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, label_smoothing=0.0, use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(2 * b, 5, dtype=torch.long), "attention_mask": torch.ones(2 * b, 5),
              "completion_mask": mask, "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    return DPOTrainer._compute_loss(stub, lambda **kw: out, inputs, return_outputs=False)


def test_dpo_loss_matches_trl():
    g = torch.Generator().manual_seed(2)
    c, r, rc, rr = (-torch.rand(5, generator=g) * 10 for _ in range(4))
    ours, chosen_reward, rejected_reward = dpo_losses(c, r, rc, rr, beta=0.3)
    theirs = _trl_dpo_loss(c, r, rc, rr, beta=0.3)
    assert float(ours.mean()) == pytest.approx(float(theirs), rel=1e-5)
    assert torch.allclose(chosen_reward - rejected_reward, 0.3 * ((c - rc) - (r - rr)))


def test_pairs_collate_chosen_first_and_train_only_answers():
    ex = [{"prompt_ids": [1, 2, 3], "chosen_ids": [4, 5], "rejected_ids": [6], "index": 7},
          {"prompt_ids": [1], "chosen_ids": [8], "rejected_ids": [9, 9, 9], "index": 3}]
    b = collate_pairs(ex, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [1, 8, 0, 0, 0], [1, 2, 3, 6, 0], [1, 9, 9, 9, 0]]
    assert b["labels"].tolist() == [[-100, -100, -100, 4, 5], [-100, 8, -100, -100, -100],
                                    [-100, -100, -100, 6, -100], [-100, 9, 9, 9, -100]]
    assert b["attention_mask"].sum(1).tolist() == [5, 2, 4, 4]
    assert b["index"].tolist() == [7, 3]


def test_every_rank_gets_the_same_number_of_batches():
    for n, micro, world in [(5, 2, 2), (7, 3, 3), (1, 4, 2), (8, 2, 4)]:
        per = [shares(n, micro, r, world) for r in range(world)]
        assert len({len(p) for p in per}) == 1
        flat = sorted(i for p in per for b in p for i in b)
        assert flat == list(range(n))
