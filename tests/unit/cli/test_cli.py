"""The `finetune` CLI's fast commands: validate and explain, with clear exit codes (validate's deep checks:
tests/unit/cli/test_validate.py)."""

import shutil
import subprocess
import sys
from pathlib import Path

from finetune_cli.main import main

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"


def quickstart_job(tmp_path, model) -> Path:
    """The quickstart job in tmp_path beside a copy of its data, its model at `model`, its output in tmp_path."""
    shutil.copytree(QUICKSTART.parent / "data", tmp_path / "data")
    text = QUICKSTART.read_text().replace("path: .model", f"path: {model}")
    job = tmp_path / "job.yaml"
    job.write_text(text.replace("path: ../../out/quickstart", "path: out"))
    return job


def test_validate_ok(tiny_model_dir, tmp_path, capsys):
    job = quickstart_job(tmp_path, tiny_model_dir)
    assert main(["validate", str(job)]) == 0
    out = capsys.readouterr().out
    assert "valid FineTuneJob 'quickstart' (lora + sft, messages data)" in out
    assert "ok  data: 800 examples read, 800 kept" in out and "ok  model: tokenizer, chat template" in out


def test_validate_bad_file_exit_2_names_line(tmp_path, capsys):
    bad = tmp_path / "job.yaml"
    bad.write_text(QUICKSTART.read_text().replace("maxSteps: 300", "maxStep: 300"))
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:" in err and "spec.training.maxStep: unknown field 'maxStep'; did you mean 'maxSteps'?" in err


def test_explain_field_and_unknown_field(capsys):
    assert main(["explain", "spec.method.lora.rank"]) == 0
    out = capsys.readouterr().out
    assert "FIELD: spec.method.lora.rank" in out and "DEFAULT: 16" in out
    assert main(["explain", "spec.method.lora.rnak"]) == 2
    assert "no field 'rnak' in spec.method.lora" in capsys.readouterr().err


def test_validate_without_the_slow_parts_does_not_import_torch(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"vocab_size": 100, "hidden_size": 64, "intermediate_size": 128, '
                                       '"num_hidden_layers": 2, "num_attention_heads": 4}')
    job = quickstart_job(tmp_path, model)
    code = ("import sys; from finetune_cli.main import main; rc = main(['validate', '--skip-model', '--skip-data', %r]); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'validate imported torch'" % str(job))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_only_the_cluster_commands_import_the_kubernetes_client():
    code = ("import sys; from finetune_cli.main import main; main(['explain', 'spec.method']); "
            "assert 'kubernetes' not in sys.modules, 'explain imported kubernetes'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    trainer = REPO / "trainer" / "finetune_trainer"
    importers = [p for p in trainer.rglob("*.py") if "import kubernetes" in p.read_text()
                 or "from kubernetes" in p.read_text()]
    assert importers == []
