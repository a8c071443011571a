"""`--watch`: follow one FineTuneJob's status until it ends, drawing progress and telling each condition change.

On a terminal the progress line is redrawn in place and condition changes are printed above it; anywhere else
(a CI log, a pipe) every line is a plain line: a condition change, or a new progress line each time the status
changes (the operator refreshes progress every resync, so a log gets a line per refresh, not per step). The exit
code is the job's outcome (job_view.outcome). Nothing waits forever: the watch is read in chunks, `--timeout`
bounds the whole, and a job that no operator ever answers is said to be so after `no_operator_after` seconds.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Optional, TextIO

from finetune_api.status import FineTuneJobStatus

from . import job_view

TIMED_OUT = 124  # like timeout(1): the job may still be running


class Display:
    """Writes what changed between two statuses to `out` (redrawn in place on a TTY)."""

    def __init__(self, out: TextIO, tty: bool):
        self.out, self.tty = out, tty
        self.last: Optional[FineTuneJobStatus] = None
        self._line = ""

    def _say(self, text: str) -> None:
        if self.tty and self._line:
            self.out.write("\r\x1b[2K")  # clear the progress line, print above it, then redraw it
        self.out.write(text + "\n")
        if self.tty and self._line:
            self.out.write(self._line)
        self.out.flush()

    def update(self, st: FineTuneJobStatus) -> None:
        for line in job_view.condition_changes(self.last, st):
            self._say(line)
        line = job_view.progress_line(st)
        self.last = st
        if line == self._line:
            return
        if self.tty:
            self._line = line
            self.out.write("\r\x1b[2K" + line)
            self.out.flush()
        else:
            self._line = line
            self._say(line)

    def note(self, text: str) -> None:
        self._say(text)

    def close(self) -> None:
        if self.tty and self._line:
            self.out.write("\n")
            self.out.flush()
            self._line = ""


def watch(updates: Iterable[tuple[str, Optional[dict]]], display: Display, name: str,
          timeout: Optional[float] = None, no_operator_after: float = 30.0,
          clock: Callable[[], float] = time.monotonic) -> int:
    """Show `updates` (kube.Kube.follow's pairs) until the job ends; returns the exit code.

    Args:
        timeout: give up after this many seconds (exit 124; the job goes on).
        no_operator_after: say so when the job still has no status after this many seconds.
    """
    start = clock()
    warned, reported = False, False
    try:
        for what, obj in updates:
            if what == "deleted":
                display.note(f"FineTuneJob {name} was deleted")
                return 1
            if what == "object":
                reported = reported or bool((obj.get("status") or {}).get("conditions"))
                st = job_view.status_of(obj)
                display.update(st)
                code, lines = job_view.outcome(st)
                if code is not None:
                    display.close()
                    for line in lines:
                        print(line, file=sys.stdout if code == 0 else sys.stderr, flush=True)
                    return int(code)
            if not warned and not reported and clock() - start >= no_operator_after:
                warned = True
                display.note(f"no operator has reported on {name} for {no_operator_after:.0f}s: is the "
                             "finetune-operator running? (kubectl -n finetune-system get pods)")
            if timeout is not None and clock() - start >= timeout:
                display.close()
                print(f"stopped watching after {timeout:.0f}s; the job goes on (finetune status {name})",
                      file=sys.stderr)
                return TIMED_OUT
    finally:
        display.close()
    return 1
