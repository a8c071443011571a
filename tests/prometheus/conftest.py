"""Fixtures for the monitoring tests: one real Prometheus per session (tests/support/prometheus.py) and promtool.

Every test under tests/prometheus is in the `slow` tier (CI runs it; plain `pytest` skips it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support.prometheus import running_prometheus, prometheus_binary

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def prometheus():
    """A real Prometheus on 127.0.0.1 (scrapes every 200ms, evaluates rules every 1s), stopped at the end of the session."""
    with running_prometheus() as server:
        yield server


@pytest.fixture(scope="session")
def promtool() -> str:
    return prometheus_binary("promtool")
