"""The output folder is the run's own: checked before any heavy work, created, and locked while a run writes.

Why: a path that cannot be written (under a file, read-only, /proc, a 300-character name) used to surface as a
traceback after the model and data had loaded; two `finetune run`s on one spec wrote into one folder at once;
and an output path pointing at a folder of the user's (their project, `/`, the model's own folder) had its
README.md and tokenizer_config.json overwritten. So the trainer writes only into a folder it owns:
- missing or empty, or
- holding this job's own earlier run of the same spec: its manifest.json or a checkpoint records the spec's
  fingerprint (finetune_api.fingerprint), or, before any of those was written, it holds nothing but what a
  run writes (metrics.jsonl in our format, runs/, checkpoints/, ...);
- never `/`, a home folder, a virtual filesystem (/proc, /sys, /dev), the model's folder or a data folder.

`check_output(cfg)` says all of that without writing anything (`finetune validate` and `finetune run` call it
before any worker starts). The launcher's `OutputLock` calls it again, creates the folder, proves it writable and
holds an exclusive `flock` on `.finetune.lock` until the run ends (the kernel drops it when the process dies); a
run that fails before writing anything removes the folder it created, so a failed set-up leaves nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Optional

from finetune_api.fingerprint import differences, fingerprint
from finetune_api.trainer_config import TrainerConfig

from .errors import TrainerInputError

LOCK_FILE = ".finetune.lock"
VIRTUAL = ("/proc", "/sys", "/dev")
# what a run writes at the top of its output folder (adapter or full weights, tokenizer, records)
RECORDS = {"manifest.json", "metrics.jsonl", "runs", "checkpoints", LOCK_FILE, "training_curves.png",
           "spectrum_snr.json", ".final.tmp", ".merged.tmp", ".manifest.json.tmp", ".training_curves.png.tmp"}
WEIGHTS = {"adapter_config.json", "adapter_model.safetensors", "config.json", "generation_config.json",
           "model.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "chat_template.jinja", "tokenizer.model", "vocab.json", "merges.txt",
           "added_tokens.json", "README.md", "merged"}

_WHY = {
    errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "the filesystem is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a folder", errno.ENAMETOOLONG: "a name in the path is too long",
    errno.ENOSPC: "no space left on the device", errno.EEXIST: "a file of that name exists",
}


class OutputPathError(TrainerInputError):
    """spec.output.path cannot be used; the message names the path and the reason."""


def path_error(path: Path, e: OSError, doing: str) -> OutputPathError:
    """An OutputPathError for `e`, met while `doing` at `path`."""
    why = _WHY.get(e.errno, e.strerror or str(e))
    return OutputPathError(f"spec.output.path '{path}': cannot {doing}: {why}; choose a folder this run can write")


def _refuse(path: Path, why: str) -> OutputPathError:
    return OutputPathError(f"spec.output.path '{path}': {why}")


def check_path(path: Path) -> None:
    """Refuse a path the run cannot or must not write, without writing anything.

    Raises:
        OutputPathError: names the path, the reason and what to do.
    """
    p = Path(os.path.abspath(path))
    if p == Path(p.anchor) or p == Path.home() or p.parent == Path("/home"):
        raise _refuse(p, "is a root or home folder; the trainer writes only into a folder of its own: give a "
                         "new sub-folder, e.g. out/my-job")
    if any(p == Path(v) or Path(v) in p.parents for v in VIRTUAL):
        raise _refuse(p, f"is on a virtual filesystem ({next(v for v in VIRTUAL if p.as_posix().startswith(v))}), "
                         "which holds no files; choose a folder on a disk")
    for part in p.parts[1:]:
        if len(part.encode("utf-8")) > 255:
            raise _refuse(p, f"the name '{part[:40]}…' has {len(part.encode('utf-8'))} bytes; a file system allows at "
                             "most 255 per name: shorten it")
    if len(str(p).encode("utf-8")) > 4000:
        raise _refuse(p, "the path is longer than the 4,096 bytes a file system allows; shorten it")
    existing = p
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail with a puzzling EEXIST
            raise _refuse(p, f"'{existing}' is a link to nothing; remove it or choose another path")
        existing = existing.parent
    if not existing.is_dir():
        raise _refuse(p, f"'{existing}' is a file, not a folder" + ("" if existing == p else
                         ", so nothing can be created under it") + "; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "the filesystem is read-only" if _read_only(existing) else "permission denied"
        raise _refuse(p, f"cannot write into '{existing}': {why}; choose a folder this run can write")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_not_inputs(cfg: TrainerConfig) -> None:
    """Refuse an output folder that is the model's folder or a data folder, or that holds one of them.

    Raises:
        OutputPathError: names both fields.
    """
    out = Path(os.path.realpath(cfg.output_dir))  # a link to the model folder is the model folder
    inputs = [("spec.model.path", cfg.model_path)]
    inputs += [(f"spec.dataset.paths[{i}]", p) for i, p in enumerate(cfg.dataset_paths or [])]
    inputs += [(f"spec.dataset.validationPaths[{i}]", p) for i, p in enumerate(cfg.validation_paths or [])]
    for field, value in inputs:
        if not value:
            continue
        q = Path(os.path.realpath(value))
        if q == out:
            raise _refuse(out, f"is also {field}; the trainer would write over its own input: choose another folder")
        if out in q.parents:
            raise _refuse(out, f"holds {field} ('{q}'); the trainer writes only into a folder of its own: choose "
                               "another folder")


def _recorded(path: Path) -> list[tuple[str, dict]]:
    """(where, record) for the manifest and every checkpoint of an earlier run in `path`."""
    found = []
    for f in [path / "manifest.json", *sorted((path / "checkpoints").glob("step-*/checkpoint.json"))]:
        if f.is_file():
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                doc = {}
            found.append((str(f.relative_to(path)), doc if isinstance(doc, dict) else {}))
    return found


def _our_history(f: Path) -> bool:
    """Whether metrics.jsonl holds rows this trainer writes (a JSON object with an integer step per line)."""
    try:
        lines = [x for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    for i, line in enumerate(lines):
        try:
            row = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # a torn last line: a killed writer
                continue
            return False
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)):
            return False
    return True


def check_owner(cfg: TrainerConfig) -> None:
    """Refuse an existing output folder that is not this job's own (see the module docstring).

    Raises:
        OutputPathError: names what is foreign there, or which spec fields differ from the earlier run's.
    """
    out = Path(cfg.output_dir)
    if not out.is_dir():
        return
    entries = sorted(e.name for e in out.iterdir() if e.name != LOCK_FILE and not e.name.startswith(".write-probe-"))
    if not entries:
        return
    spec = cfg.job.spec
    records = _recorded(out)
    if records:
        mine = fingerprint(spec)
        for where, doc in records:
            if doc.get("fingerprint") == mine:
                continue
            recorded = doc.get("shaping_fields")
            diff = differences(recorded, spec) if isinstance(recorded, dict) else []
            detail = "; ".join(diff[:6]) + ("; ..." if len(diff) > 6 else "") if diff else \
                f"its {where} records no fingerprint of this spec"
            raise _refuse(out, f"holds another run ({where}: {detail}); resuming or overwriting it would mix two "
                               "runs: choose another output path, or delete the folder to start over")
        return
    foreign = [e for e in entries if e not in RECORDS | WEIGHTS]
    history = out / "metrics.jsonl"
    if history.exists() and not _our_history(history):
        foreign.insert(0, "metrics.jsonl (not rows this trainer writes)")
    marked = any(e in RECORDS for e in entries)
    if foreign or not marked:
        shown = ", ".join((foreign or entries)[:5]) + (", ..." if len(foreign or entries) > 5 else "")
        raise _refuse(out, f"is a folder that holds files this trainer did not write ({shown}); the trainer writes "
                           "only into an empty folder or its own earlier run of this spec: choose a new folder")


def check_output(cfg: TrainerConfig) -> None:
    """Every check of the output folder that needs no write: the path, the inputs, the owner.

    Raises:
        OutputPathError: the first problem found.
    """
    check_path(Path(cfg.output_dir))
    check_not_inputs(cfg)
    check_owner(cfg)


def prepare(path: Path) -> Optional[Path]:
    """Create the output folder and prove it writable (a probe file written and removed).

    Returns:
        The highest folder created here (the output folder or one of its parents), or None when it existed.

    Raises:
        OutputPathError: names the path and the reason.
    """
    check_path(path)
    created = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        created = p
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise path_error(path, e, "create the output folder") from None
    if not path.is_dir():
        raise OutputPathError(f"spec.output.path '{path}': is a file, not a folder")
    probe = path / f".write-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise path_error(path, e, "write into the output folder") from None
    return created


def _remove_created(path: Path, top: Path) -> None:
    """Remove `path` (holding only the lock) and the empty parents up to `top`, which this run created."""
    shutil.rmtree(path, ignore_errors=True)
    p = path.parent
    while top in [p, *p.parents] and p.is_dir() and not any(p.iterdir()):
        p.rmdir()
        if p == top:
            break
        p = p.parent


class OutputLock:
    """Context manager: the output folder checked, prepared and exclusively locked for this run."""

    def __init__(self, cfg: TrainerConfig):
        self.cfg = cfg
        self.path = Path(cfg.output_dir)
        self._fd: Optional[int] = None
        self._created: Optional[Path] = None

    def __enter__(self) -> "OutputLock":
        check_output(self.cfg)
        self._created = prepare(self.path)
        lock = self.path / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise path_error(self.path, e, "create its lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise OutputPathError(f"spec.output.path '{self.path}': another run is writing there ({holder}); "
                                  "wait for it to end, stop it, or choose another output path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            if self._created is not None and [e.name for e in self.path.iterdir()] == [LOCK_FILE]:
                _remove_created(self.path, self._created)  # a failed set-up leaves nothing behind
        return False
