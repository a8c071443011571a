"""`manifest.json`: what a finished run produced, written last so its presence means "complete".

It records the spec, the library versions, the final metrics, and the sha256 of every other file in the
output directory, so a user (or the operator, via the termination message) can tell exactly which bytes a
run made and with what. Resumable checkpoints (checkpoints/, each with its own checksummed manifest) and
hidden files (the run's lock, temp folders) are not part of the result and are not listed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
_PACKAGES = ("finetune-operator", "torch", "transformers", "peft", "accelerate", "trl", "tokenizers",
             "safetensors", "datasets", "pydantic")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape the result."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def write_manifest(output_dir: str | Path, *, spec: dict, metrics: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Hash every file under `output_dir` and write manifest.json atomically (temp file + rename).

    Returns:
        The manifest's path.
    """
    out = Path(output_dir)
    files = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if (not p.is_file() or p.name == MANIFEST or rel.parts[0] == "checkpoints"
                or any(part.startswith(".") for part in rel.parts)):
            continue
        files[rel.as_posix()] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    doc = {"spec": spec, "versions": library_versions(), "metrics": metrics, **extra, "files": files}
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False, allow_nan=False), encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out / MANIFEST)
    return out / MANIFEST
