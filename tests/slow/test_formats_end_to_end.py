"""Every trainable data format runs through `finetune run` end to end (a few steps, loss falls), packing too."""

import json

import pytest

from support.cli_runs import finetune, history, manifest, write_job

ROWS = {
    "alpaca": lambda i: {"instruction": f"Is {i} even or odd?", "input": "", "output": "even" if i % 2 == 0 else "odd"},
    "sharegpt": lambda i: {"conversations": [{"from": "human", "value": f"Is {i} even or odd?"},
                                             {"from": "gpt", "value": "even" if i % 2 == 0 else "odd"}]},
    "prompt-completion": lambda i: {"prompt": f"Is {i} even or odd? ", "completion": "even" if i % 2 == 0 else "odd"},
    "text": lambda i: {"text": f"The number {i} is {'even' if i % 2 == 0 else 'odd'}."},
}


@pytest.mark.parametrize("fmt,objective,packing", [
    ("alpaca", "sft", False), ("sharegpt", "sft", False), ("prompt-completion", "sft", True), ("text", "cpt", True),
])
def test_format_trains_end_to_end(quickstart_model, tmp_path, fmt, objective, packing):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(ROWS[fmt](i)) + "\n" for i in range(100, 260)))
    job = write_job(tmp_path, quickstart_model, **{
        "dataset.paths": [str(data)], "dataset.format": fmt, "dataset.validationPaths": None,
        "dataset.validationSplit": 0.1, "dataset.packing": packing, "objective.type": objective,
        "training.maxSteps": 12, "training.evalEverySteps": None, "training.microBatchSize": 4,
        "training.globalBatchSize": 8, "training.learningRate": 3e-3, "output.saveEverySteps": 50})
    r = finetune("run", str(job))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = manifest(tmp_path / "out")["metrics"]
    losses = [x["loss"] for x in history(tmp_path / "out") if "loss" in x]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    assert m["final_eval_loss"] < m["initial_eval_loss"]
    if objective == "cpt":
        assert m["data"]["trainable_tokens"] >= 0.9 * m["data"]["tokens"], "cpt trains every token"
    else:
        assert m["data"]["trainable_tokens"] < 0.5 * m["data"]["tokens"], "sft masks the prompt"
