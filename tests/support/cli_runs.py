"""Running the real `finetune` CLI from tests: job files from the quickstart, subprocess runs, outputs read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from support.spec_patch import apply_changes

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


def write_job(tmp: Path, model: Path, **changes) -> Path:
    """The quickstart job with absolute paths into `tmp`, and `changes` ("training.maxSteps": 20, ...) applied."""
    doc = yaml.safe_load((QUICKSTART / "job.yaml").read_text())
    spec = doc["spec"]
    spec["model"]["path"] = str(model)
    spec["dataset"]["paths"] = [str(QUICKSTART / "data" / "train.jsonl")]
    spec["dataset"]["validationPaths"] = [str(QUICKSTART / "data" / "validation.jsonl")]
    spec["output"]["path"] = str(tmp / "out")
    apply_changes(spec, changes)
    path = tmp / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def finetune(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run the real `finetune` CLI in a subprocess (torchrun and all)."""
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1", **kw.pop("env_extra", {}))
    return subprocess.run([sys.executable, "-m", "finetune_cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=kw.pop("timeout", 900), **kw)


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def history(out: Path) -> list[dict]:
    return [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines() if r]
