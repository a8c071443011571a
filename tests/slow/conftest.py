"""The slow tier: real `finetune run` fine-tunes on the CPU (minutes in all). CI runs it; `pytest` alone skips it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from support.cli_runs import QUICKSTART


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def quickstart_model(tmp_path_factory) -> Path:
    """The quickstart's tiny model, created the way `make quickstart` creates it."""
    out = tmp_path_factory.mktemp("qs") / "model"
    subprocess.run([sys.executable, "-m", "finetune_trainer.tiny_model", "--out", str(out), "--corpus",
                    str(QUICKSTART / "data" / "train.jsonl")], check=True, capture_output=True)
    return out
