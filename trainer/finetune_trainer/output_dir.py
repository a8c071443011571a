"""The output folder is the run's own: created and checked before any heavy work, and locked while a run writes.

Why: a path that cannot be written (under a file, read-only, /proc, a 300-character name) used to surface as a
traceback after the model and data had loaded; two `finetune run`s on one spec wrote into one folder at once.
The launcher calls `OutputLock` before any worker starts: it creates the folder, proves it writable, and holds
an exclusive `flock` on `.finetune.lock` inside it until the run ends (the kernel drops it when the process
dies, so a killed run never leaves a stale lock). A run that fails before writing anything removes the folder
it created, so a failed set-up leaves nothing behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path

from finetune_api.trainer_config import TrainerConfig

from .errors import TrainerInputError

LOCK_FILE = ".finetune.lock"

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


def prepare(path: Path) -> None:
    """Create the output folder and prove it writable (a probe file written and removed).

    Raises:
        OutputPathError: names the path and the reason.
    """
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


class OutputLock:
    """Context manager: the output folder prepared and exclusively locked for this run."""

    def __init__(self, cfg: TrainerConfig):
        self.path = Path(cfg.output_dir)
        self._fd = None
        self._created = False

    def __enter__(self) -> "OutputLock":
        self._created = not self.path.exists()
        prepare(self.path)
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
        if self._fd is None:
            return False
        if self._created and [p.name for p in self.path.iterdir()] == [LOCK_FILE]:  # nothing written: no trace
            (self.path / LOCK_FILE).unlink()
            self.path.rmdir()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
        return False
