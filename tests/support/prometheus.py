"""A real Prometheus server on loopback for tests: it scrapes what a test starts and evaluates the chart's alert
rules, and tests ask it questions over its HTTP API, as Grafana would.

The server comes from Debian's `prometheus` package (scripts/install-prometheus.sh, run by `make test`), with a
temp config and data dir, scraping every 200ms (a CPU quickstart step takes tens of ms). Tests add scrape
targets by writing file_sd target files (`add_target`), which Prometheus picks up without a reload.
Used by tests/prometheus (slow tier) and tests/cluster/test_operator_metrics.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "finetune-operator" / "rules" / "finetune-rules.yaml"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_binary(name: str) -> str:
    """`prometheus` or `promtool` from PATH, installing Debian's package once if absent."""
    if not shutil.which(name):
        res = subprocess.run(["bash", str(REPO / "scripts" / "install-prometheus.sh")], capture_output=True, text=True)
        if res.returncode != 0 or not shutil.which(name):
            pytest.fail(f"{name} not found; scripts/install-prometheus.sh said:\n{res.stderr[-2000:]}", pytrace=False)
    return shutil.which(name)  # type: ignore[return-value]


class Prometheus:
    """One `prometheus` process and the questions tests ask it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = workdir / "targets"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.targets.mkdir(parents=True)
        config = {
            "global": {"scrape_interval": "200ms", "scrape_timeout": "200ms", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "finetune", "file_sd_configs": [
                {"files": [str(self.targets / "*.json")], "refresh_interval": "1s"}]}],
        }
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.workdir / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [prometheus_binary("prometheus"), f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in 60s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def log_tail(self) -> str:
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    free_port = staticmethod(free_port)

    def add_target(self, name: str, address: str, **labels: str) -> None:
        """Scrape `address` (host:port) from now on, as job "finetune" with `labels` added."""
        tmp = self.targets / f".{name}.json.tmp"
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels}]))
        tmp.rename(self.targets / f"{name}.json")  # atomic: file_sd never reads half a file

    def api(self, path: str, **params: Any) -> dict:
        """GET /api/v1/<path>; the whole JSON answer, whatever its status (errors come back as JSON too)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 400/422: a bad query; the body says why
            return json.loads(e.read())

    def query(self, expr: str, at: Optional[float] = None) -> list[dict]:
        """An instant query's result vector (asserting the query was accepted)."""
        ans = self.api("query", query=expr, **({"time": at} if at is not None else {}))
        assert ans["status"] == "success", (expr, ans)
        return ans["data"]["result"]

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
        """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.5)
        pytest.fail(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def running_prometheus():
    """A started Prometheus in a temp directory, stopped and removed on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="finetune-prom-"))
    server = Prometheus(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
