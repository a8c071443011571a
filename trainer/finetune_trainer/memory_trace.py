"""Bench-only: `FINETUNE_MEMORY_TRACE=<dir>` records every CUDA allocation of a run and dumps it per rank.

Why: the planner (plan/finetune_plan/memory.py) is held to every measured peak; when one misses, the question is
which tensors were alive at the peak. PyTorch's allocator history (`torch.cuda.memory._record_memory_history`)
answers it with a stack per allocation; bench/memory_peak.py replays the dump to the peak and groups what was
alive by where it was allocated. Inert unless the variable is set; nothing in a spec or the operator sets it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

ENV = "FINETUNE_MEMORY_TRACE"


def start() -> None:
    """Begin recording this process's CUDA allocations (no-op without the variable or a GPU)."""
    if not os.environ.get(ENV):
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.memory._record_memory_history(max_entries=1_000_000, stacks="python")


def dump() -> None:
    """Write this rank's allocation history to $FINETUNE_MEMORY_TRACE/rank-<r>.pickle."""
    out = os.environ.get(ENV)
    if not out:
        return
    import torch

    if not torch.cuda.is_available():
        return
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        snap = torch.cuda.memory._snapshot()
        with open(Path(out) / f"rank-{os.environ.get('RANK', '0')}.pickle", "wb") as f:
            pickle.dump(snap, f)
    except (OSError, RuntimeError) as e:  # a bench aid must not change how the run ends
        print(f"memory trace not written: {e}", flush=True)
