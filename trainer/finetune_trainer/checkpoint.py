"""Resumable checkpoints under `<output>/checkpoints/step-NNNNNNNN/`: atomic, checksummed, space-checked, fingerprinted.

A checkpoint is complete or absent. Every strategy writes its files (strategy.py: each rank its own share)
into a hidden temp folder; rank 0 then writes `checkpoint.json` — the step, the spec fingerprint, and the
size and sha256 of every file — fsyncs, and renames the folder into place; older ones beyond
`keepLastCheckpoints` go after the new one has landed. Before writing, the free space of the output volume
is compared with what the checkpoint needs (the previous checkpoint's size, else the plan's estimate), so a
full disk stops the run with the numbers instead of leaving a half-written folder. On resume the newest
checkpoint whose files match its own manifest is used; a damaged one (truncated, missing, altered) is named
and skipped, so a preempted pod resumes from the previous one instead of crash-looping.

Every function taking `d` is a collective: all ranks call it, and rank 0's decision is shared.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

from .distributed import Dist, all_sum, barrier
from .errors import TrainerInputError

PREFIX = "step-"
MANIFEST = "checkpoint.json"
GiB = 1024 ** 3


class DiskFull(TrainerInputError):
    """The output volume cannot hold what the run must write next."""


class CheckpointMismatch(TrainerInputError):
    """The output folder holds checkpoints of a different run (other spec fields that shape training)."""


def checkpoints_dir(output_dir: str | Path) -> Path:
    """Where checkpoints of a run live."""
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoints_dir(output_dir) / f"{PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Checkpoints that were completed (have their manifest), oldest first; not yet verified."""
    d = checkpoints_dir(output_dir)
    if not d.is_dir():
        return []
    found = [p for p in d.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / MANIFEST).exists()
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(output_dir: str | Path) -> Optional[Path]:
    """The newest completed checkpoint (unverified), or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def read_manifest(path: Path) -> dict:
    """A checkpoint's manifest (step, fingerprint, files)."""
    return json.loads((path / MANIFEST).read_text(encoding="utf-8"))


def checkpoint_bytes(path: Path) -> int:
    """Bytes a checkpoint holds, by its manifest."""
    return sum(f["bytes"] for f in read_manifest(path)["files"].values())


def free_bytes(path: Path) -> int:
    """Bytes available to this process on the filesystem holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 1024 ** 2:.1f} MiB"


def ensure_space(where: Path, need: int, what: str, d: Dist) -> None:
    """Raise DiskFull on every rank when `where`'s filesystem has less than `need` bytes free (rank 0 measures).

    Args:
        what: the thing about to be written, for the message (e.g. "checkpoint at step 400").
    """
    free = float(free_bytes(where)) if d.main else 0.0
    free = all_sum([free], d)[0]
    if need > free:
        raise DiskFull(f"{what} needs {_gib(need)}, {where} has {_gib(free)} free; free space on the output "
                       "volume, make it larger, keep fewer checkpoints (spec.output.keepLastCheckpoints) or save "
                       "less often (spec.output.saveEverySteps)")


def sha256_file(path: Path) -> str:
    from .manifest import sha256_file as sha

    return sha(path)


def write(output_dir: str | Path, step: int, write_files: Callable[[Path], None], meta: dict[str, Any],
          keep_last: int, d: Dist, need_bytes: int) -> Path:
    """Write checkpoint `step` atomically (a collective).

    Args:
        write_files: called on every rank with the temp folder; writes that rank's files into it.
        meta: JSON-able facts for resuming (fingerprint, total steps, strategy, world size).
        keep_last: checkpoints kept; older ones are deleted once this one has landed.
        need_bytes: the space this checkpoint is expected to need (checked first).

    Returns:
        The checkpoint folder.

    Raises:
        DiskFull: not enough space (checked before writing, or met while writing); nothing partial is left.
    """
    root = checkpoints_dir(output_dir)
    final = step_dir(output_dir, step)
    tmp = root / f".{final.name}.tmp"
    if d.main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    barrier(d)
    ensure_space(root, need_bytes, f"checkpoint at step {step}", d)
    if d.main:
        tmp.mkdir()
    barrier(d)
    try:
        write_files(tmp)
        _save_rng(tmp / f"rng-{d.rank}.pt")
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e, root):
            raise DiskFull(f"checkpoint at step {step}: the output volume filled up while writing "
                           f"({_gib(free_bytes(root))} free now); the previous checkpoint is intact. Free space, "
                           "make the volume larger or keep fewer checkpoints") from None
        raise
    barrier(d)
    if d.main:
        files = {}
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.relative_to(tmp).as_posix()] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        doc = {"step": step, "world_size": d.world, **meta, "files": files}
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=1), encoding="utf-8")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(d)
    return final


def _disk_full(e: BaseException, where: Path) -> bool:
    """ENOSPC, or torch's serializer's way of saying it ('unexpected pos', 'failed writing file')."""
    import errno

    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    text = str(e)
    if "unexpected pos" in text or "failed writing" in text or "No space left" in text:
        return True
    try:
        return free_bytes(where) < 16 * 1024 ** 2
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def verify(path: Path, deep: bool = True) -> Optional[str]:
    """Why checkpoint `path` cannot be trusted, or None when every file matches its manifest.

    Args:
        deep: also compare sha256 (else sizes only).
    """
    try:
        doc = read_manifest(path)
        files = doc["files"]
    except (OSError, ValueError, KeyError) as e:
        return f"its {MANIFEST} is unreadable ({type(e).__name__})"
    for rel, want in files.items():
        f = path / rel
        if not f.is_file():
            return f"{rel} is missing"
        if f.stat().st_size != want["bytes"]:
            return f"{rel} has {f.stat().st_size} bytes, its manifest says {want['bytes']}"
        if deep and sha256_file(f) != want["sha256"]:
            return f"{rel} does not match its sha256"
    return None


def choose_for_resume(output_dir: str | Path, d: Dist, log: Callable[[str], None]) -> Optional[Path]:
    """The newest checkpoint whose files are intact (a collective; rank 0 verifies, says what it skipped)."""
    found = list_checkpoints(output_dir)
    pick = -1.0
    if d.main:
        for i in range(len(found) - 1, -1, -1):
            why = verify(found[i])
            if why is None:
                pick = float(i)
                break
            log(f"warning: checkpoint {found[i].name} is damaged ({why}); "
                + ("falling back to the previous one" if i else "no earlier checkpoint: starting from step 0"))
    pick = all_sum([pick if d.main else 0.0], d)[0]
    return found[int(pick)] if pick >= 0 else None


def check_same_run(path: Path, fields: dict) -> None:
    """Refuse to resume `path` under a spec whose shaping fields differ (finetune_api.fingerprint).

    Raises:
        CheckpointMismatch: names spec.output.path and every field that differs.
    """
    recorded = read_manifest(path).get("shaping_fields")
    if recorded is None or recorded == fields:
        return
    diff = [f"spec.{k}: was {json.dumps(recorded.get(k))}, now {json.dumps(fields.get(k))}"
            for k in sorted(set(recorded) | set(fields)) if recorded.get(k) != fields.get(k)]
    raise CheckpointMismatch(
        f"spec.output.path '{path.parent.parent}' holds checkpoints of a different run, so it cannot resume "
        f"here ({'; '.join(diff[:8])}{'; ...' if len(diff) > 8 else ''}); use another output path, or delete "
        f"{path.parent} to start over")


def remove_partial(output_dir: str | Path) -> None:
    """Delete temp folders a killed run left (checkpoints and outputs being written); rank 0 only."""
    out = Path(output_dir)
    for tmp in list(checkpoints_dir(out).glob(f".{PREFIX}*.tmp")) + list(out.glob(".*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def _save_rng(path: Path) -> None:
    import numpy as np
    import torch

    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, path)


def restore_rng(path: Path, rank: int) -> None:
    """This rank's RNG states (dropout) from checkpoint `path`; a new rank keeps its fresh seed."""
    import numpy as np
    import torch

    f = path / f"rng-{rank}.pt"
    if not f.exists():
        return
    state = torch.load(f, map_location="cpu", weights_only=False)
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
