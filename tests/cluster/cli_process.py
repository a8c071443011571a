"""The real `finetune` CLI as a user runs it against the test control plane: a subprocess with KUBECONFIG set.

Why a helper: the cluster commands are tested end to end (kubeconfig, context, API server, operator), and
`--watch` must be observed while it runs (the test changes the job mid-watch and waits for the CLI to show it),
so output is read line by line in a thread and waited on with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from controlplane import ControlPlane

REPO = Path(__file__).resolve().parents[2]


def cli_env(cp: ControlPlane, **extra: str) -> dict[str, str]:
    roots = [str(REPO / p) for p in ("api", "plan", "operator", "trainer", "cli")]
    env = dict(cp.env, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(roots + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return env


def finetune(cp: ControlPlane, *args: str, timeout: float = 120, cwd: Path | None = None,
             **env: str) -> subprocess.CompletedProcess:
    """Run `finetune ARGS` to the end (at most `timeout` seconds)."""
    return subprocess.run([sys.executable, "-m", "finetune_cli.main", *args], capture_output=True, text=True,
                          env=cli_env(cp, **env), timeout=timeout, cwd=cwd)


class Running:
    """`finetune ARGS` running in the background; its stdout+stderr lines collected as they come."""

    def __init__(self, cp: ControlPlane, *args: str, cwd: Path | None = None):
        self.proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=cli_env(cp), cwd=cwd)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def _drain(self, block_for: float) -> bool:
        """Take what arrived (waiting up to `block_for` for the first); False once the output has ended."""
        try:
            item = self._q.get(timeout=block_for)
        except queue.Empty:
            return True
        while True:
            if item is None:
                return False
            self.lines.append(item)
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return True

    def wait_for_line(self, text: str, timeout: float = 60) -> str:
        """The first line containing `text`; AssertionError (with the output so far) after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            hit = next((line for line in self.lines if text in line), None)
            if hit is not None:
                return hit
            if time.monotonic() > deadline or not self._drain(min(1.0, max(0.05, deadline - time.monotonic()))):
                hit = next((line for line in self.lines if text in line), None)
                if hit is not None:
                    return hit
                raise AssertionError(f"no line with {text!r} from finetune after {timeout:.0f}s; output:\n"
                                     + "\n".join(self.lines))

    def wait(self, timeout: float = 60) -> int:
        """The exit code (the output fully read); kills the CLI and fails after `timeout`."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"finetune did not exit within {timeout:.0f}s; output:\n" + "\n".join(self.lines))
        while self._drain(5):
            pass
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
