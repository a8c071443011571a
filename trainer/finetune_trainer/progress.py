"""Progress a person watches: a bar with loss, tokens/s and ETA on a terminal, plain lines otherwise.

Pods and CI logs are not terminals; a carriage-return progress bar there is noise. So the choice is made
by `isatty()`, and the plain lines carry the same numbers (and are what `kubectl logs` shows).
"""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Rank-0 progress reporting for `total` optimizer steps starting at `start`."""

    def __init__(self, total: int, start: int = 0, every: int = 1, stream: TextIO = sys.stderr,
                 tty: Optional[bool] = None):
        self.total, self.start, self.every, self.stream = total, start, every, stream
        self.tty = stream.isatty() if tty is None else tty
        self.t0 = time.monotonic()
        self.bar = None
        if self.tty:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, file=stream, unit="step", dynamic_ncols=True)

    def eta(self, step: int) -> Optional[float]:
        """Seconds left at the average speed of this session's steps."""
        done = step - self.start
        if done <= 0:
            return None
        return (time.monotonic() - self.t0) / done * (self.total - step)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        """Report step `step` (1-based count of steps done)."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
        elif step % self.every == 0 or step == self.total:
            print(f"step {step}/{self.total} loss {loss:.4f} lr {lr:.2e} tok/s {tokens_per_s:,.0f} "
                  f"eta {_fmt_eta(self.eta(step))}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        """A message that must not break the bar (evaluation results, checkpoints)."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
