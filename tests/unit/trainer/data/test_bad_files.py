"""Malformed dataset files of every format (tests/support/bad_data.py): each refused naming the file and the line,
by the loader `finetune run` uses and by `finetune validate`, which lists every bad line; nothing is written."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from finetune_trainer.data import DataError, load_datasets
from finetune_trainer.data.files import read_paths
from support.bad_data import FILES, GOOD

IDS = [f"{f.format}-{i}-{f.what.replace(' ', '-')[:30]}" for i, f in enumerate(FILES)]


def write(tmp_path, f) -> str:
    path = tmp_path / f.name
    path.write_bytes(f.body if isinstance(f.body, bytes) else f.body.encode("utf-8"))
    return str(path)


def where(path: str, line) -> str:
    return f"{path}:{line}: " if line else f"{path}: "


def test_there_are_at_least_thirty_and_every_format_is_covered():
    assert len(FILES) >= 30
    assert {f.format for f in FILES} == set(GOOD)


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_the_runs_loader_names_file_and_line(tmp_path, f, tiny_tokenizer):
    from finetune_api.dataset import DatasetSpec

    path = write(tmp_path, f)
    spec = DatasetSpec(paths=[path], format=f.format, max_length=128)
    objective = "dpo" if f.format == "preference" else "sft"
    with pytest.raises(DataError) as e:
        load_datasets(spec, tiny_tokenizer, seed=0, base_dir=tmp_path, objective=objective)
    assert str(e.value).startswith(where(path, f.line)), str(e.value)
    assert f.fragment in str(e.value)


@pytest.mark.parametrize("f", FILES, ids=IDS)
def test_validate_lists_it_and_writes_nothing(tmp_path, f):
    from finetune_cli.main import main

    path = write(tmp_path, f)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128,
                                                   "num_hidden_layers": 2, "num_attention_heads": 4}))
    objective = "dpo" if f.format == "preference" else "sft"
    (tmp_path / "job.yaml").write_text(
        "apiVersion: finetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: t}\nspec:\n  model: {path: model}\n"
        f"  dataset: {{paths: [{f.name}], format: {f.format}}}\n  objective: {{type: {objective}}}\n"
        "  output: {path: out}\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", "--skip-model", str(tmp_path / "job.yaml")])
    assert code == 2
    assert where(path, f.line) in err.getvalue() and f.fragment in err.getvalue(), err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert not (tmp_path / "out").exists(), "validating must write nothing"


def test_validate_lists_every_bad_line_of_a_file_not_only_the_first(tmp_path):
    lines = [GOOD["messages"], "{", GOOD["messages"], '{"messages": 3}', json.dumps({"text": "x"})]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    problems: list = []
    records = read_paths(["d.jsonl"], "messages", tmp_path, problems)
    assert len(records) == 2
    assert [e.line for e in problems] == [2, 4, 5]


def test_a_json_array_file_is_read_with_the_line_of_each_example(tmp_path):
    body = "[\n  " + GOOD["alpaca"] + ",\n  {\n    \"instruction\": \"a\",\n    \"output\": \"b\"\n  }\n]\n"
    (tmp_path / "alpaca_data.json").write_text(body)
    records = read_paths(["alpaca_data.json"], "alpaca", tmp_path)
    assert [r.line for r in records] == [2, 3]
    assert records[1].data["messages"][1]["content"] == "b"


def test_a_hub_dataset_without_network_is_a_named_error(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'org/data' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    from finetune_trainer.data.files import read_hub

    with pytest.raises(DataError, match=r"^hub:org/data: cannot reach the Hugging Face hub to download it .* use "
                                        r"spec.dataset.paths"):
        read_hub("org/data", "train", "alpaca")
