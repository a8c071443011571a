"""README.md's cluster walkthrough, run as written on the real control plane (kwok plays the GPU node and the trainer):
a newcomer who types exactly those commands reaches Succeeded, the names it prints are the names it creates, and the
chart prints its notes. Also: the examples' prerequisites are objects the API server accepts.

What the test adds that a real cluster has and this one does not: the running operator (the chart's Deployment is
scheduled on kwok, where no container runs, so the operator runs in the test's process) and storage (a
PersistentVolume where a default StorageClass would provision one).
"""

from __future__ import annotations

import re
import shlex

import pytest
from controlplane import ControlPlane
from scenario import REPO, children, get_ftj, install_crd, provide_volume, running_operator, wait_phase

README = REPO / "README.md"


def walkthrough() -> list[str]:
    """The commands of the first ```bash block of README's "In a cluster" section."""
    text = README.read_text()
    section = text[text.index("## In a cluster"):]
    section = section[:section.index("\n## ", 3)]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_walkthrough_names_the_job_its_example_creates():
    import yaml

    commands = walkthrough()
    applied = [c.split("-f ")[1] for c in commands if c.startswith("kubectl apply -f")]
    names = {yaml.safe_load((REPO / path).read_text())["metadata"]["name"] for path in applied}
    for c in commands:
        if c.startswith(("kubectl get ftj", "kubectl describe ftj")):
            assert c.split()[3] in names, f"{c!r} names a job none of {applied} creates ({names})"


def test_a_newcomer_following_readme_reaches_succeeded(control_plane: ControlPlane):
    cp = control_plane
    install_crd(cp)  # (helm keeps a CRD it finds; this one is the chart's own copy)
    cp.add_gpu_node("readme-gpu", gpus=1)
    provide_volume(cp, "default", "llama-lora-output")
    outputs = []
    try:
        with running_operator(cp):
            for command in walkthrough():
                args = shlex.split(command)
                run = cp.helm if args[0] == "helm" else cp.kubectl
                res = run(*args[1:], timeout=180)
                assert res.returncode == 0, f"{command}: {res.stderr}"
                outputs.append((command, res.stdout))
            obj = wait_phase(cp, "llama-lora", "default", "Succeeded", timeout=120)
            describe = cp.kubectl("describe", "ftj", "llama-lora")
        notes = outputs[0][1]
        assert "NOTES:" in notes and "kubectl get ftj llama-lora" in notes and "hf-token" in notes, notes
        listing = next(out for cmd, out in outputs if cmd.startswith("kubectl get ftj"))
        assert "llama-lora" in listing and "PHASE" in listing, listing
        assert "Succeeded" in describe.stdout and "Completed" in describe.stdout, describe.stdout
        pod = children(cp, "default", "llama-lora")["pods"][0]
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf-token"
        assert get_ftj(cp, "llama-lora", "default")["status"]["phase"] == obj["status"]["phase"]
    finally:
        cp.kubectl("delete", "ftj", "llama-lora", "--wait=false")
        cp.kubectl("delete", "secret", "hf-token")
        cp.helm("uninstall", "finetune-operator", "-n", "finetune-system")
        cp.kubectl("delete", "node", "readme-gpu", "--wait=false")


def test_the_examples_prerequisites_are_accepted(control_plane: ControlPlane, namespace: str):
    res = control_plane.kubectl("apply", "--dry-run=server", "-n", namespace, "-f",
                                str(REPO / "examples" / "cluster" / "prerequisites"))
    assert res.returncode == 0, res.stderr
