"""Test-only fault injection: `FINETUNE_FAULT=<phase>:<rank>[:<step>]` makes one rank fail at one point.

Why in the trainer at all: the fault suite (tests/slow/test_faults.py, docs/faults.md) must show that a failure
on any rank in any phase ends the whole run promptly with the reason, and that a damaged or interrupted save
loses nothing — through the real launcher, workers and collectives, not a mock. The hook is inert unless the
variable is set; nothing in a spec or the operator sets it.

Phases: `data` (while loading data), `step` (before the optimizer step of <step>), `checkpoint` (while writing
the checkpoint of <step>), `enospc` (a full disk while writing that checkpoint), `output` (while writing the
final output), `nan` (a NaN loss at <step>), `hang` (stop answering at <step>: sleep past any timeout).
"""

from __future__ import annotations

import errno
import os
import time
from typing import Optional

ENV = "FINETUNE_FAULT"


class InjectedFault(RuntimeError):
    """The failure a test asked for."""


def _wanted(phase: str, rank: int, step: Optional[int]) -> bool:
    raw = os.environ.get(ENV, "")
    if not raw:
        return False
    parts = raw.split(":")
    if parts[0] != phase or int(parts[1]) != rank:
        return False
    return len(parts) < 3 or step is None or int(parts[2]) == step


def maybe_fail(phase: str, rank: int, step: Optional[int] = None) -> None:
    """Raise (or hang) here when the test asked for this phase on this rank (and step)."""
    if not _wanted(phase, rank, step):
        return
    if phase == "hang":
        time.sleep(10 ** 6)
    if phase == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected)", "checkpoint")
    raise InjectedFault(f"injected fault: {phase} on rank {rank}" + (f" at step {step}" if step is not None else ""))


def nan_loss(rank: int, step: int) -> bool:
    """Whether the test asked for a NaN loss at this step (on this rank)."""
    return _wanted("nan", rank, step)
