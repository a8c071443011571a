"""The slow tier: real `finetune run` fine-tunes on the CPU (minutes in all). CI runs it; `pytest` alone skips it."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.slow)


