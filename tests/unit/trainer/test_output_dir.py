"""The trainer writes only into a folder it owns: refused up front, by name, with nothing written, otherwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from finetune_api import load_job_text
from finetune_api.fingerprint import fingerprint, shaping_fields
from finetune_trainer.errors import TrainerInputError
from finetune_trainer.local_run import resolve_paths
from finetune_trainer.output_dir import LOCK_FILE, OutputLock, OutputPathError, check_output

JOB = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: t}
spec:
  model: {path: model}
  dataset: {paths: [data/train.jsonl], format: messages}
  output: {path: OUT}
"""


def cfg_for(tmp_path: Path, out: str, extra: str = ""):
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "train.jsonl").touch()
    job = load_job_text(JOB.replace("OUT", json.dumps(out)) + extra)
    return resolve_paths(job, tmp_path / "job.yaml")


def refused(cfg) -> str:
    with pytest.raises(OutputPathError) as e:
        check_output(cfg)
    assert str(e.value).startswith("spec.output.path '"), str(e.value)
    return str(e.value)


def test_a_new_or_empty_folder_is_fine_and_nothing_is_written_by_the_check(tmp_path):
    check_output(cfg_for(tmp_path, "out/run1"))
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    check_output(cfg_for(tmp_path, "empty"))


def test_a_folder_of_the_users_files_is_refused_and_left_untouched(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("mine")
    msg = refused(cfg_for(tmp_path, "project"))
    assert "holds files this trainer did not write (README.md)" in msg
    assert (project / "README.md").read_text() == "mine"


@pytest.mark.parametrize("out", ["/", "~"])
def test_root_and_home_are_refused(tmp_path, out):
    assert "is a root or home folder" in refused(cfg_for(tmp_path, out))


def test_the_model_folder_and_a_data_folder_are_refused(tmp_path):
    assert "is also spec.model.path" in refused(cfg_for(tmp_path, "model"))
    assert "holds spec.dataset.paths[0]" in refused(cfg_for(tmp_path, "data"))
    as_folder = cfg_for(tmp_path, "data").model_copy(update={"dataset_paths": [str(tmp_path / "data")]})
    assert "is also spec.dataset.paths[0]" in refused(as_folder)


@pytest.mark.parametrize("out,why", [
    ("afile/sub", "is a file, not a folder, so nothing can be created under it"),
    ("/proc/finetune-out", "is on a virtual filesystem (/proc)"),
    ("x" * 300, "has 300 bytes; a file system allows at most 255 per name"),
])
def test_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path, out, why):
    (tmp_path / "afile").write_text("x")
    assert why in refused(cfg_for(tmp_path, out))


def test_a_read_only_parent_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    assert "permission denied" in refused(cfg_for(tmp_path, "ro/out"))


def test_tilde_of_an_unknown_user_is_named(tmp_path):
    with pytest.raises(TrainerInputError, match=r"spec.output.path: '~nosuchuser/out' starts with '~nosuchuser', "
                                                r"but this machine has no user 'nosuchuser'"):
        cfg_for(tmp_path, "~nosuchuser/out")


def test_a_foreign_metrics_file_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text("epoch,loss\n1,0.5\n")
    assert "metrics.jsonl (not rows this trainer writes)" in refused(cfg_for(tmp_path, "out"))


def _manifest(out: Path, spec) -> None:
    out.mkdir(exist_ok=True)
    (out / "manifest.json").write_text(json.dumps({"fingerprint": fingerprint(spec), "shaping_fields":
                                                   shaping_fields(spec)}))


def test_this_jobs_earlier_run_is_ours_and_another_spec_is_named_field_by_field(tmp_path):
    cfg = cfg_for(tmp_path, "out")
    _manifest(tmp_path / "out", cfg.job.spec)
    (tmp_path / "out" / "adapter_model.safetensors").write_bytes(b"x")
    check_output(cfg)
    other = cfg_for(tmp_path, "out", "  training: {learningRate: 0.5}\n")
    msg = refused(other)
    assert "holds another run (manifest.json: spec.training.learningRate: was 0.0002, now 0.5)" in msg


def test_a_run_that_never_checkpointed_leaves_a_folder_that_is_still_ours(tmp_path):
    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # torn last line
    check_output(cfg_for(tmp_path, "out"))


def test_a_model_folder_of_someone_else_is_not_ours(tmp_path):
    other = tmp_path / "other-model"
    other.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (other / name).write_text("{}")
    assert "did not write" in refused(cfg_for(tmp_path, "other-model"))


def test_a_failed_set_up_leaves_no_folder_behind(tmp_path):
    cfg = cfg_for(tmp_path, "a/b/out")
    with OutputLock(cfg):
        assert (tmp_path / "a" / "b" / "out" / LOCK_FILE).exists()
    assert not (tmp_path / "a").exists(), "the folders the lock created must go when nothing was written"
    with OutputLock(cfg):
        (tmp_path / "a" / "b" / "out" / "metrics.jsonl").write_text('{"step": 1}\n')
    assert (tmp_path / "a" / "b" / "out" / "metrics.jsonl").exists()
