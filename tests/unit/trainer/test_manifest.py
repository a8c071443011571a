"""manifest.json lists every output file with its real sha256, and is written last, atomically."""

import hashlib
import json

from finetune_trainer.manifest import MANIFEST, write_manifest


def test_manifest_hashes_every_output_file_and_records_versions(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / ".finetune.lock").write_text("pid 1")
    (tmp_path / "checkpoints" / "step-1").mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-1" / "state.json").write_text("{}")
    path = write_manifest(tmp_path, spec={"model": {"path": "/m"}}, metrics={"final_loss": 0.5}, extra={"name": "x"})
    doc = json.loads(path.read_text())
    assert path.name == MANIFEST
    assert doc["files"]["adapter_model.safetensors"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    # checkpoints carry their own checksummed manifest; hidden files (the lock, temp folders) are not the result
    assert not any(k.startswith("checkpoints/") or k.startswith(".") for k in doc["files"])
    assert MANIFEST not in doc["files"]
    assert doc["metrics"] == {"final_loss": 0.5} and doc["name"] == "x"
    assert "torch" in doc["versions"] and "python" in doc["versions"]
    assert not list(tmp_path.glob(".*.tmp")), "the temp file must be renamed away"


def test_a_nan_metric_is_refused_rather_than_written_as_bare_nan(tmp_path):
    import pytest

    with pytest.raises(ValueError):
        write_manifest(tmp_path, spec={}, metrics={"final_loss": float("nan")}, extra={})
    assert not (tmp_path / MANIFEST).exists()
