"""Dockerfile.operator and Dockerfile.trainer as text: what the production build gets from the ARG defaults.

The image tier (tests/images) builds both files and checks the built images, but with test values for the
ARGs that reach what this machine cannot (a local base instead of python:3.11-slim / nvidia/cuda, torch from
PyPI, no GPU extras); the production defaults are checked here: pinned bases, CUDA and the GPU extras.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / name).read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def last(instrs, op: str) -> str:
    return [a for o, a in instrs if o == op][-1]


def resolved(name: str) -> list[tuple[str, str]]:
    """instructions() with every `${ARG}` replaced by the ARG's default (the production build)."""
    instrs = instructions(name)
    defaults = dict(a.split("=", 1) for o, a in instrs if o == "ARG" and "=" in a)
    return [(o, re.sub(r"\$\{(\w+)\}", lambda m: defaults.get(m.group(1), m.group(0)), a)) for o, a in instrs]


def base_images(instrs) -> list[str]:
    """The images the FROM lines pull (not the earlier stages they build on)."""
    stages, bases = set(), []
    for op, arg in instrs:
        if op == "FROM":
            image, *rest = arg.split()
            if image not in stages:
                bases.append(image)
            if len(rest) == 2 and rest[0].upper() == "AS":
                stages.add(rest[1])
    return bases


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.trainer"])
def test_base_images_are_pinned_and_user_is_not_root(name):
    instrs = resolved(name)
    for image in base_images(instrs):
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned base image {image}"
    user = last(instrs, "USER").split(":")[0]
    assert user not in ("root", "0"), f"{name} runs as root"


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.trainer"])
def test_entrypoint_is_a_console_script_of_the_package(name):
    entry = json.loads(last(instructions(name), "ENTRYPOINT"))
    assert entry[0] in SCRIPTS, f"{name}: ENTRYPOINT {entry[0]} is not in [project.scripts]"
    module, func = SCRIPTS[entry[0]].split(":")
    mod = __import__(module, fromlist=[func]) if "trainer" not in name or module.endswith("entrypoint") else None
    if mod is not None:
        assert callable(getattr(mod, func))


def test_operator_image_carries_no_torch_and_trainer_image_has_cuda_and_gpu_extras():
    op = " ".join(a for _, a in instructions("Dockerfile.operator"))
    assert "torch" not in op and "[operator]" in op
    tr = resolved("Dockerfile.trainer")
    assert all("nvidia/cuda" in b for b in base_images(tr))
    assert any("[trainer,gpu]" in a for o, a in tr if o == "RUN")
    assert any("download.pytorch.org/whl/cu" in a for o, a in tr if o == "RUN")


def test_trainer_uid_matches_the_pod_template():
    from finetune_operator.workload import TRAINER_UID

    assert last(instructions("Dockerfile.trainer"), "USER").split(":")[0] == str(TRAINER_UID)


def test_pod_command_is_the_trainer_images_console_script():
    from finetune_operator.workload import TRAINER_COMMAND

    module, func = SCRIPTS[TRAINER_COMMAND].split(":")
    assert callable(getattr(__import__(module, fromlist=[func]), func))
    from finetune_trainer.launcher import WORKER_MODULE

    assert callable(__import__(WORKER_MODULE, fromlist=["main"]).main)


@pytest.mark.parametrize("name", ["Dockerfile.operator", "Dockerfile.trainer"])
def test_image_copies_every_package_root_it_installs(name):
    # `pip install .` installs the roots pyproject.toml lists; one not copied in is silently missing from the image
    # (the operator imports finetune_plan, the trainer too).
    roots = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["where"]
    copied = {a.split()[0].rstrip("/") for o, a in instructions(name) if o == "COPY"}
    assert set(roots) <= copied, f"{name} does not COPY {sorted(set(roots) - copied)}"
