"""micro-batch x accumulation x processes = the optimizer step's batch, from `auto` or numbers."""

import pytest

from finetune_api.contract import UserError
from finetune_api.training import TrainingSpec
from finetune_plan import plan_batches


def test_auto_on_cpu_accumulates_to_the_global_batch():
    assert plan_batches(TrainingSpec(global_batch_size=16), world=1, device="cpu") == (1, 16)


def test_auto_splits_over_processes():
    assert plan_batches(TrainingSpec(global_batch_size=32), world=2, device="cuda") == (8, 2)


def test_explicit_micro_with_auto_accumulation():
    assert plan_batches(TrainingSpec(global_batch_size=16, micro_batch_size=4), world=1, device="cpu") == (4, 4)


def test_contradicting_explicit_numbers_are_refused():
    t = TrainingSpec(global_batch_size=16, micro_batch_size=4, gradient_accumulation=2)
    with pytest.raises(UserError, match="globalBatchSize is 16 but microBatchSize 4 x gradientAccumulation 2"):
        plan_batches(t, world=1, device="cpu")


def test_explicit_numbers_without_global_batch_are_taken_as_given():
    t = TrainingSpec(micro_batch_size=4, gradient_accumulation=2)
    assert plan_batches(t, world=1, device="cpu") == (4, 2)


def test_the_planners_micro_batch_fills_auto():
    assert plan_batches(TrainingSpec(global_batch_size=64), world=2, device="cuda", auto_micro=4) == (4, 8)
