"""metrics.jsonl and TensorBoard: one row per logged step or evaluation, trimmed to the resumed step on resume.

Why trimmed: a run killed after step 57 with its newest checkpoint at step 50 logged steps 51-57, which the
resumed run logs again; dropping the rows past the checkpoint keeps every step logged exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

HISTORY = "metrics.jsonl"


def tensorboard(out: Path):
    """A TensorBoard writer into `<out>/runs`."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "runs"))


def log_row(writer, out: Path, row: dict) -> None:
    """Append a row to metrics.jsonl (and TensorBoard); None values are left out."""
    row = {k: v for k, v in row.items() if v is not None}
    with open(out / HISTORY, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k not in ("step", "time"):
                writer.add_scalar(("eval/" if k.startswith("eval") else "train/") + k, v, row["step"])


def rows(out: Path) -> list[dict]:
    """Every row of metrics.jsonl (none when absent); a torn last line (a killed writer) is skipped."""
    f = out / HISTORY
    if not f.exists():
        return []
    found = []
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return [r for r in found if isinstance(r, dict) and isinstance(r.get("step"), int)]


def eval_at_step0(out: Path) -> Optional[dict]:
    """The before-training eval metrics a resumed run logged in its first session, if any."""
    for row in rows(out):
        if row["step"] == 0 and "eval_loss" in row:
            return {k: v for k, v in row.items() if k.startswith("eval_")}
    return None


def trim(out: Path, step: int) -> None:
    """Drop metrics.jsonl rows past the resumed step (they belong to the lost tail of the last run)."""
    f = out / HISTORY
    if not f.exists():
        return
    kept = [r for r in rows(out) if r["step"] <= step]
    tmp = f.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(f)
