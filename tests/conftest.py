"""Fixtures shared by every tier: a tiny Llama model + tokenizer made on the spot (no hub access here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
# Subprocesses (finetune run, its workers, the operator) import this clone's code even when pytest runs on the
# shared cached venv's python rather than the clone's .venv (scripts/clone_venv.py).
PACKAGE_ROOTS = ("api", "plan", "trainer", "operator", "cli")
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / p) for p in PACKAGE_ROOTS] + [p for p in [os.environ.get("PYTHONPATH")] if p])

CORPUS = [
    "Is 1234 even or odd? even",
    "What day comes after Monday? Tuesday",
    "The quick brown fox jumps over the lazy dog.",
    "Translate to French: cat -> chat",
    "You are a helpful assistant. Answer briefly.",
    "chosen rejected prompt completion instruction input output system user assistant",
] * 40


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-init tiny Llama model with a BPE tokenizer (ChatML template), saved with save_pretrained."""
    pytest.importorskip("torch")
    from finetune_trainer.tiny_model import create_tiny_model

    return create_tiny_model(tmp_path_factory.mktemp("tiny") / "model", CORPUS, layers=2, hidden=64, heads=4)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tokenizer of `tiny_model_dir`, loaded through transformers like any model's."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def quickstart_model(tmp_path_factory) -> Path:
    """The quickstart's tiny model, created the way `make quickstart` creates it."""
    out = tmp_path_factory.mktemp("qs") / "model"
    subprocess.run([sys.executable, "-m", "finetune_trainer.tiny_model", "--out", str(out), "--corpus",
                    str(QUICKSTART / "data" / "train.jsonl")], check=True, capture_output=True)
    return out
