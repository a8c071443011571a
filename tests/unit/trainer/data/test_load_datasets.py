"""`load_datasets`, the package's entry point: spec in, encoded (and split, and packed) examples out."""

from __future__ import annotations

import pytest

from finetune_api.dataset import DatasetSpec
from finetune_trainer.data import DataError, load_datasets


def spec(**fields) -> DatasetSpec:
    return DatasetSpec.model_validate({"format": "messages", "paths": ["train.jsonl"], **fields})


@pytest.fixture
def twenty(write_jsonl):
    lines = [{"messages": [{"role": "user", "content": f"Is {i} even or odd?"},
                           {"role": "assistant", "content": "even" if i % 2 == 0 else "odd"}]} for i in range(20)]
    return write_jsonl(lines, "train.jsonl")


def load(tokenizer, tmp_path, seed=42, objective="sft", **fields):
    return load_datasets(spec(**fields), tokenizer, seed=seed, base_dir=tmp_path, objective=objective)


def test_no_validation_gives_an_empty_list(twenty, tiny_tokenizer, tmp_path):
    bundle = load(tiny_tokenizer, tmp_path)
    assert len(bundle.train) == 20 and bundle.validation == [] and bundle.validation_report is None
    assert bundle.report.kept == 20 and bundle.report.summary().startswith("20 examples read, 20 kept")
    assert "chat template of tokenizer" in bundle.template.name


def test_validation_split_is_seeded_and_disjoint(twenty, tiny_tokenizer, tmp_path):
    a = load(tiny_tokenizer, tmp_path, validationSplit=0.2)
    b = load(tiny_tokenizer, tmp_path, validationSplit=0.2)
    c = load(tiny_tokenizer, tmp_path, seed=7, validationSplit=0.2)
    assert (len(a.train), len(a.validation)) == (16, 4)
    ids = lambda xs: sorted(tuple(x["input_ids"]) for x in xs)  # noqa: E731
    assert ids(a.validation) == ids(b.validation) != ids(c.validation)
    assert not set(ids(a.train)) & set(ids(a.validation))
    assert a.validation_report.kept == 4


def test_validation_paths_read_the_same_way(twenty, write_jsonl, chat, tiny_tokenizer, tmp_path):
    write_jsonl([{"messages": chat}, {"messages": chat[:3]}], "eval/held.jsonl")
    bundle = load(tiny_tokenizer, tmp_path, validationPaths=["eval"])
    assert (len(bundle.train), len(bundle.validation)) == (20, 2)
    write_jsonl([{"messages": chat[:2]}], "eval/held.jsonl")
    with pytest.raises(DataError, match=r"held.jsonl:1: 'messages' has no assistant turn"):
        load(tiny_tokenizer, tmp_path, validationPaths=["eval"])


def test_packing_packs_training_rows_only(twenty, tiny_tokenizer, tmp_path):
    bundle = load(tiny_tokenizer, tmp_path, packing=True, maxLength=64, validationSplit=0.1)
    assert all(len(r["input_ids"]) <= 64 and "position_ids" in r for r in bundle.train)
    assert sum(len(r["seq_lens"]) for r in bundle.train) == 18 and len(bundle.train) < 18
    assert len(bundle.validation) == 2 and all("position_ids" not in ex for ex in bundle.validation)


def test_report_as_dict_for_the_run_summary(twenty, tiny_tokenizer, tmp_path):
    bundle = load(tiny_tokenizer, tmp_path)
    data = bundle.report.as_dict()
    assert (data["read"], data["kept"], data["dropped"]) == (20, 20, {})
    assert data["trainable_tokens"] == sum(sum(lab != -100 for lab in ex["labels"]) for ex in bundle.train)
    assert data["summary"].startswith("20 examples read")


def test_nothing_left_is_an_error_that_says_why(write_jsonl, tiny_tokenizer, tmp_path):
    long = {"messages": [{"role": "user", "content": "Is 1234 even or odd? " * 20},
                         {"role": "assistant", "content": "even"}]}
    write_jsonl([long], "train.jsonl")
    with pytest.raises(DataError, match="no training example is left: 1 examples read, 0 kept.*raise maxLength"):
        load(tiny_tokenizer, tmp_path, maxLength=16)
