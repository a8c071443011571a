"""micro-batch x accumulation x processes = the optimizer step's batch, from `auto` or numbers."""

import pytest

from finetune_api.training import TrainingSpec
from finetune_trainer.batching import plan_batches
from finetune_trainer.errors import TrainerInputError


def test_auto_on_cpu_accumulates_to_the_global_batch():
    p = plan_batches(TrainingSpec(global_batch_size=16), world=1, device="cpu", n_train=100)
    assert (p.micro, p.accumulation, p.global_batch) == (1, 16, 16)


def test_auto_splits_over_processes():
    p = plan_batches(TrainingSpec(global_batch_size=32), world=2, device="cuda", n_train=1000)
    assert (p.micro, p.accumulation, p.global_batch) == (8, 2, 32)


def test_explicit_micro_with_auto_accumulation():
    p = plan_batches(TrainingSpec(global_batch_size=16, micro_batch_size=4), world=1, device="cpu", n_train=100)
    assert (p.micro, p.accumulation) == (4, 4)


def test_contradicting_explicit_numbers_are_refused():
    t = TrainingSpec(global_batch_size=16, micro_batch_size=4, gradient_accumulation=2)
    with pytest.raises(TrainerInputError, match="globalBatchSize is 16 but microBatchSize 4 x gradientAccumulation 2"):
        plan_batches(t, world=1, device="cpu", n_train=100)


def test_explicit_numbers_without_global_batch_are_taken_as_given():
    t = TrainingSpec(micro_batch_size=4, gradient_accumulation=2)
    assert plan_batches(t, world=1, device="cpu", n_train=100).global_batch == 8


def test_global_batch_capped_by_a_small_dataset():
    p = plan_batches(TrainingSpec(global_batch_size=64), world=1, device="cpu", n_train=10)
    assert p.global_batch == 10


def test_too_little_data_for_one_step_names_the_numbers():
    t = TrainingSpec(micro_batch_size=4, gradient_accumulation=4)
    with pytest.raises(TrainerInputError, match="3 training example.*fewer than one optimizer step needs \\(16"):
        plan_batches(t, world=1, device="cpu", n_train=3)
