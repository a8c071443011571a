"""Resumable checkpoints under `<output>/checkpoints/step-NNNNNNNN/`, written atomically.

A checkpoint is complete or absent: it is written into a hidden temp directory and renamed into place, so a
pod killed mid-write (preemption) leaves the previous checkpoint as the latest. It holds exactly what
resuming needs to continue the *same* run: the trainable weights (adapter or all), optimizer and scheduler
state, RNG states (dropout), and the position in the data. Older checkpoints beyond `keepLastCheckpoints`
are deleted after a new one lands.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Optional

PREFIX = "step-"


def checkpoints_dir(output_dir: str | Path) -> Path:
    """Where checkpoints of a run live."""
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    d = checkpoints_dir(output_dir)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def trainable_state(model) -> dict:
    """name -> tensor for every parameter that trains (the adapter for LoRA, everything for full)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict:
    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: str | Path, step: int, model, optimizer, scheduler, train_state: dict,
                    keep_last: int, rank: int = 0, barrier=lambda: None, weights: Optional[dict] = None,
                    optimizer_state: Optional[dict] = None) -> Optional[Path]:
    """Write checkpoint `step` atomically and delete the ones beyond `keep_last`.

    Args:
        output_dir: the run's output directory.
        step: optimizer steps completed.
        model: the (unwrapped) model; only trainable parameters are saved.
        optimizer, scheduler: their state dicts are saved.
        train_state: JSON-serialisable position in the run (epoch, batches consumed, history).
        keep_last: how many checkpoints to keep.
        rank, barrier: every rank calls this (each saves its own RNG state); rank 0 writes the rest.
        weights, optimizer_state: already gathered full states (sharded strategies gather them on every
            rank first, see parallel.py); default: read off `model` and `optimizer`.

    Returns:
        The checkpoint directory (on rank 0; None elsewhere).
    """
    import torch
    from safetensors.torch import save_file

    root = checkpoints_dir(output_dir)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    barrier()
    if rank != 0:
        barrier()
        return None
    save_file(weights if weights is not None else trainable_state(model), tmp / "trainable.safetensors")
    opt = optimizer_state if optimizer_state is not None else optimizer.state_dict()
    torch.save({"optimizer": opt, "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **train_state}, indent=1), encoding="utf-8")
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int = 0, strategy=None) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this rank's RNG from checkpoint `path`; returns its train state.

    `strategy` (parallel.py) loads full tensors into sharded parameters; without it they are copied in place.
    """
    import torch
    from safetensors.torch import load_file

    weights = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise ValueError(f"{path}: checkpoint does not fit this model/method (unknown parameters {missing[:3]})")
    blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    if strategy is not None:
        strategy.load_trainable(weights)
        strategy.load_optimizer(optimizer, blob["optimizer"])
    else:
        with torch.no_grad():
            for n, t in weights.items():
                params[n].copy_(t)
        optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    rng = path / f"rng-{rank}.pt"
    if rng.exists():  # a run resumed on more processes than it had: new ranks keep their fresh seeds
        _set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
    return json.loads((path / "state.json").read_text(encoding="utf-8"))
