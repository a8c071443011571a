"""The `finetune` CLI's fast commands: validate and explain (no torch import), with clear exit codes."""

import subprocess
import sys
from pathlib import Path

from finetune_cli.main import main

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "examples" / "quickstart" / "job.yaml"


def test_validate_ok(capsys):
    assert main(["validate", str(QUICKSTART)]) == 0
    assert "valid FineTuneJob 'quickstart' (lora + sft, messages data)" in capsys.readouterr().out


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


def test_validate_does_not_import_torch():
    code = ("import sys; from finetune_cli.main import main; main(['validate', %r]); "
            "assert 'torch' not in sys.modules, 'validate imported torch'" % str(QUICKSTART))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_only_the_cluster_commands_import_the_kubernetes_client():
    code = ("import sys; from finetune_cli.main import main; main(['validate', %r]); "
            "assert 'kubernetes' not in sys.modules, 'validate imported kubernetes'" % str(QUICKSTART))
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    trainer = REPO / "trainer" / "finetune_trainer"
    importers = [p for p in trainer.rglob("*.py") if "import kubernetes" in p.read_text()
                 or "from kubernetes" in p.read_text()]
    assert importers == []
