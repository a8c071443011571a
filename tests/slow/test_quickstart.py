"""The quickstart learns: held-out loss falls by at least half, exact match rises well above the untrained model.

Also: the adapter it writes reloads with PeftModel.from_pretrained and reproduces the trained model's logits.
"""

from pathlib import Path

import pytest
import torch

from support.cli_runs import finetune, history, manifest, write_job


@pytest.fixture(scope="module")
def trained(quickstart_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quickstart")
    job = write_job(tmp, quickstart_model, **{"output.mergeAdapter": True})
    r = finetune("run", str(job))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp / "out", r


def _validation_examples(model_dir):
    from transformers import AutoTokenizer

    from finetune_api import load_job
    from finetune_trainer.data import load_datasets

    repo = Path(__file__).resolve().parents[2]
    job = load_job(repo / "examples" / "quickstart" / "job.yaml")
    ds = job.spec.dataset.model_copy(update={
        "paths": [str(repo / "examples/quickstart/data/train.jsonl")],
        "validation_paths": [str(repo / "examples/quickstart/data/validation.jsonl")]})
    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok, load_datasets(ds, tok, seed=0, base_dir=repo, objective="sft").validation


def test_held_out_loss_falls_by_half_and_exact_match_rises(trained, quickstart_model):
    from transformers import AutoModelForCausalLM

    from finetune_trainer.evaluation import exact_match

    out, run = trained
    m = manifest(out)["metrics"]
    assert m["final_eval_loss"] <= 0.5 * m["initial_eval_loss"], m
    tok, val = _validation_examples(quickstart_model)
    untrained = exact_match(AutoModelForCausalLM.from_pretrained(quickstart_model), tok, val, "cpu")
    assert m["eval_exact_match"] >= 0.8, m
    assert m["eval_exact_match"] >= untrained + 0.5, (untrained, m["eval_exact_match"])
    assert "eval exact match" in run.stdout and "before training" in run.stdout


def test_output_layout_and_manifest(trained):
    out, _ = trained
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "manifest.json",
            "metrics.jsonl", "training_curves.png", "runs", "checkpoints", "merged"} <= names
    files = manifest(out)["files"]
    assert "adapter_model.safetensors" in files and any(f.startswith("runs/events.out.tfevents") for f in files)
    assert any(f.startswith("merged/") and f.endswith(".safetensors") for f in files)
    rows = history(out)
    assert rows[0] == {"step": 0, "eval_loss": manifest(out)["metrics"]["initial_eval_loss"]}
    assert max(r["step"] for r in rows) == 300


def test_adapter_reload_reproduces_trained_logits(trained, quickstart_model):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from finetune_trainer.checkpoint import latest_checkpoint

    out, _ = trained
    ids = torch.tensor([[4, 100, 101, 102, 103, 7, 8, 9]])
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(quickstart_model), out).eval()
    # the trained model as it was in memory: the base plus the final checkpoint's trainable weights
    trained_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(quickstart_model), out).eval()
    weights = load_file(latest_checkpoint(out) / "trainable.safetensors")
    params = dict(trained_model.named_parameters())
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
        base_logits = AutoModelForCausalLM.from_pretrained(quickstart_model)(ids).logits
        a = reloaded(ids).logits
        b = trained_model(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out / "merged")(ids).logits
    assert len(weights) > 0
    assert torch.allclose(a, b, atol=1e-5), "the saved adapter differs from the trained weights"
    assert torch.allclose(merged, a, atol=1e-4), "the merged model differs from base + adapter"
    assert not torch.allclose(a, base_logits, atol=1e-3), "the adapter changed nothing"
