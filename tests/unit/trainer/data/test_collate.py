"""Collation: right padding with -100 labels for plain examples; continuing positions, no mask, for packed rows."""

from __future__ import annotations

import pytest

from finetune_trainer.data import collate

torch = pytest.importorskip("torch")


def test_plain_examples_are_right_padded_with_a_mask():
    batch = collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [-100]}], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [-100, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert "position_ids" not in batch and batch["input_ids"].dtype == torch.long


def test_packed_rows_pad_with_continuing_positions_and_no_mask():
    rows = [
        {"input_ids": [5, 6, 7, 8], "labels": [-100, 6, -100, 8], "position_ids": [0, 1, 0, 1], "seq_lens": [2, 2]},
        {"input_ids": [9, 10], "labels": [-100, 10], "position_ids": [0, 1], "seq_lens": [2]},
    ]
    batch = collate(rows, pad_id=0)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, -100, 8], [-100, 10, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 1, 2, 3]]


def test_bad_batches_are_refused():
    plain = {"input_ids": [1], "labels": [-100]}
    with pytest.raises(ValueError, match="mixes packed rows and plain examples"):
        collate([plain, {**plain, "position_ids": [0]}], pad_id=0)
    with pytest.raises(ValueError, match="no pad token"):
        collate([plain], pad_id=None)
    with pytest.raises(ValueError, match="empty batch"):
        collate([], pad_id=0)
