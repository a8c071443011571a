"""The operator image, built from Dockerfile.operator: what the Helm chart's Deployment relies on when it runs it.

The chart runs the image's ENTRYPOINT (it sets only `args`) as uid/gid 65532 with runAsNonRoot and a read-only
root filesystem; these tests run the built image the same way (runc, support/images.py).
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import yaml

from support import images

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "charts" / "finetune-operator" / "templates" / "deployment.yaml"


def chart_security_context() -> dict:
    """The operator pod's securityContext as the chart's Deployment template writes it (literal values)."""
    text = DEPLOYMENT.read_text()
    block = re.search(r"^      securityContext:\n((?:        .*\n)+)", text, re.M)
    assert block, "no pod securityContext in the chart's Deployment"
    return yaml.safe_load(textwrap.dedent(block.group(1)))


def test_user_is_numeric_non_root_and_the_one_the_chart_runs_as(operator_image):
    cfg = images.config(operator_image.ref)
    uid, gid = images.user_ids(cfg)
    assert uid != 0 and gid != 0
    sc = chart_security_context()
    assert sc["runAsNonRoot"] is True
    assert (sc["runAsUser"], sc["runAsGroup"]) == (uid, gid)


def test_entrypoint_starts_as_the_image_user_on_a_read_only_root(operator_image, tmp_path):
    entry = images.config(operator_image.ref)["Entrypoint"]
    assert entry == ["finetune-operator"]
    assert "command:" not in DEPLOYMENT.read_text()  # the chart relies on this ENTRYPOINT
    code, out = images.run_as_image_user(operator_image.ref, [*entry, "--help"], log=tmp_path / "help.log")
    assert code == 0 and "usage: finetune-operator" in out, out
    # what `finetune-operator` hands to kopf (`-m finetune_operator.handlers`) imports with its dependencies
    code, out = images.run_as_image_user(
        operator_image.ref, ["python3", "-c", "import finetune_operator.handlers, kopf, kubernetes; print('ok')"],
        log=tmp_path / "import.log")
    assert code == 0 and out.strip().endswith("ok"), out


def test_image_holds_no_torch_and_stays_small(operator_image, tmp_path):
    code, out = images.run_as_image_user(
        operator_image.ref, ["python3", "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
        log=tmp_path / "torch.log")
    assert code == 0 and out.strip() == "None", out
    with images.rootfs(operator_image.ref) as root:
        assert not list(root.glob("opt/venv/lib/python3*/site-packages/torch*"))
        size = images.size_bytes(root)
    print(f"\noperator image: {size / 1e6:.0f} MB unpacked")
    assert size < 600e6, f"{size / 1e6:.0f} MB"
