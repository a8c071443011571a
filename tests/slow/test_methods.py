"""Every method trains in the real recipe, and exactly the parameters it means to train change.

In-process runs of `recipe.run` (one CPU process, a 2-layer model, a few steps): a snapshot is taken right
after the method is applied and compared with the trained model, as trl's tests do.
"""

from pathlib import Path

import torch
import yaml

from finetune_api import load_job_text
from finetune_trainer import modeling, recipe
from finetune_trainer.local_run import plan_local
from support.cli_runs import QUICKSTART

torch.set_num_threads(1)  # the CI machine's cores are shared: one thread is several times faster here


def train(tmp: Path, model_dir: Path, method: dict, monkeypatch, objective: str = "sft", steps: int = 6) -> tuple:
    doc = yaml.safe_load((QUICKSTART / "job.yaml").read_text())
    s = doc["spec"]
    s["model"]["path"] = str(model_dir)
    s["dataset"] |= {"paths": [str(QUICKSTART / "data/train.jsonl")],
                     "validationPaths": [str(QUICKSTART / "data/validation.jsonl")]}
    s["method"], s["objective"] = method, {"type": objective}
    s["training"] |= {"maxSteps": steps, "evalEverySteps": None, "microBatchSize": 8, "globalBatchSize": 8,
                      "learningRate": 3e-3}
    s["output"] = {"path": str(tmp / "out"), "saveEverySteps": 100}
    cfg = plan_local(load_job_text(yaml.safe_dump(doc)), tmp / "job.yaml", gpus_visible=0)
    seen = {}
    original = modeling.apply_method

    def snapshot(model, cfg, **kw):
        model, report = original(model, cfg, **kw)
        seen["model"] = model
        seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return model, report

    monkeypatch.setattr(modeling, "apply_method", snapshot)
    summary = recipe.run(cfg)
    after = dict(seen["model"].named_parameters())
    changed = {n for n, p in after.items() if not torch.equal(p.detach(), seen["before"][n])}
    trainable = {n for n, p in after.items() if p.requires_grad}
    return summary, changed, trainable, set(after)


def test_lora_trains_every_adapter_matrix_and_nothing_else(tiny_model_dir, tmp_path, monkeypatch):
    summary, changed, trainable, names = train(
        tmp_path, tiny_model_dir, {"type": "lora", "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}}, monkeypatch)
    adapters = {n for n in names if "lora_A" in n or "lora_B" in n}
    assert len(adapters) == 2 * 7 * 2  # A and B, 7 linear types, 2 layers
    assert changed == trainable == adapters
    assert summary["final_eval_loss"] < summary["initial_eval_loss"]


def test_full_trains_every_parameter(tiny_model_dir, tmp_path, monkeypatch):
    summary, changed, trainable, names = train(tmp_path, tiny_model_dir, {"type": "full"}, monkeypatch)
    assert changed == trainable == names
    assert summary["final_eval_loss"] < 0.7 * summary["initial_eval_loss"]


def test_spectrum_trains_exactly_the_selected_matrices_and_saves_the_scan(tiny_model_dir, tmp_path, monkeypatch):
    import json

    summary, changed, trainable, names = train(
        tmp_path, tiny_model_dir, {"type": "spectrum", "spectrum": {"fraction": 0.5}}, monkeypatch)
    scan = json.loads((tmp_path / "out" / "spectrum_snr.json").read_text())
    selected = {n + ".weight" for n in scan["selected"]}
    assert len(selected) == 7  # one of the two layers' matrices of each of the 7 types
    assert changed == trainable == selected
    assert "spectrum_snr.json" in json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
    assert summary["final_eval_loss"] < summary["initial_eval_loss"]


def test_cpt_trains_on_every_token(tiny_model_dir, tmp_path, monkeypatch):
    summary, changed, trainable, _ = train(tmp_path, tiny_model_dir, {"type": "full"}, monkeypatch, objective="cpt")
    assert summary["data"]["trainable_tokens"] == summary["data"]["tokens"] - summary["data"]["kept"]  # all but BOS
    assert changed == trainable
    assert summary["final_eval_loss"] < summary["initial_eval_loss"]
