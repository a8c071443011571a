"""The trainer image, built from Dockerfile.trainer: what the operator's trainer pods rely on when they run it.

The pods run the command the operator renders (not the ENTRYPOINT) as uid/gid 1000 with a read-only root
filesystem, writable only where volumes are mounted (/tmp, the output). These tests run the built image that way
(runc, support/images.py), up to the quickstart: `make quickstart`'s two commands, run inside the image.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from finetune_api.job import FineTuneJob
from finetune_operator.render import render_children
from finetune_operator.workload import TRAINER_UID
from support import images
from support.container import Mount

pytestmark = pytest.mark.trainer_image

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart"


def pod_template(image: str) -> dict:
    """The trainer pod template the operator renders for the CPU quickstart."""
    doc = yaml.safe_load((QUICKSTART / "job.yaml").read_text())
    doc["spec"]["model"]["path"] = "/models/tiny"
    doc["spec"]["dataset"] |= {"paths": ["/data/train.jsonl"], "validationPaths": ["/data/validation.jsonl"]}
    doc["spec"]["output"] |= {"path": "run", "volume": {"claimName": "out"}}
    doc["spec"]["distributed"] = {"gpusPerNode": 0}
    job = FineTuneJob.model_validate(doc)
    kinds = {c["kind"]: c for c in render_children(job, uid="0000", image=image)}
    return kinds["Job"]["spec"]["template"]


def test_user_is_numeric_non_root_and_the_one_the_pods_run_as(trainer_image):
    uid, gid = images.user_ids(images.config(trainer_image.ref))
    sc = pod_template(trainer_image.ref)["spec"]["securityContext"]
    assert uid == gid == TRAINER_UID != 0
    assert (sc["runAsUser"], sc["runAsGroup"], sc["runAsNonRoot"]) == (uid, gid, True)


def test_entrypoint_and_the_pod_command_start(trainer_image, tmp_path):
    entry = images.config(trainer_image.ref)["Entrypoint"]
    code, out = images.run_as_image_user(trainer_image.ref, [*entry, "--help"], log=tmp_path / "entry.log")
    assert code == 0 and "--config" in out, out
    command = pod_template(trainer_image.ref)["spec"]["containers"][0]["command"]
    code, out = images.run_as_image_user(trainer_image.ref, [command[0], "--help"], log=tmp_path / "cmd.log")
    assert code == 0 and "usage:" in out, out


def test_quickstart_trains_as_the_image_user_on_a_read_only_root(trainer_image, tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "tmp"  # the writable mounts: the output volume and /tmp
    for d in (out, scratch):
        d.mkdir()
        os.chown(d, TRAINER_UID, TRAINER_UID)
    doc = yaml.safe_load((QUICKSTART / "job.yaml").read_text())
    doc["spec"]["model"]["path"] = "/out/model"
    doc["spec"]["dataset"] |= {"paths": ["/quickstart/data/train.jsonl"],
                               "validationPaths": ["/quickstart/data/validation.jsonl"]}
    doc["spec"]["output"]["path"] = "/out/run"
    (out / "job.yaml").write_text(yaml.safe_dump(doc))
    mounts = [Mount(str(QUICKSTART), "/quickstart", readonly=True), Mount(str(out), "/out"),
              Mount(str(scratch), "/tmp")]
    # `make quickstart`: create the tiny model, then `finetune run`, both inside the image
    script = ("python -m finetune_trainer.tiny_model --out /out/model --corpus /quickstart/data/train.jsonl"
              " && finetune run /out/job.yaml")
    code, log = images.run_as_image_user(trainer_image.ref, ["sh", "-c", script], mounts=mounts,
                                         env={"OMP_NUM_THREADS": "2"}, log=tmp_path / "quickstart.log", timeout=900)
    assert code == 0, log[-4000:]
    run = out / "run"
    manifest = json.loads((run / "manifest.json").read_text())
    adapter = run / "adapter_model.safetensors"
    digest = hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert manifest["files"]["adapter_model.safetensors"]["sha256"] == digest
    metrics = manifest["metrics"]
    assert metrics["final_eval_loss"] <= 0.5 * metrics["initial_eval_loss"], metrics
    owners = {p.stat().st_uid for p in run.rglob("*")}
    assert owners == {TRAINER_UID}, owners


def test_image_holds_torch_and_stays_within_its_size(trainer_image):
    with images.rootfs(trainer_image.ref) as root:
        assert list(root.glob("opt/venv/lib/python3*/site-packages/torch/__init__.py"))
        size = images.size_bytes(root)
    print(f"\ntrainer image: {size / 1e9:.1f} GB unpacked")
    assert size < 9e9, f"{size / 1e9:.1f} GB"  # docs/images.md records the size; growth should be a decision
