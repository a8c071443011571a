"""`finetune-operator`'s start: kopf's identity when the image's uid has no user name (the chart's 65532)."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest
import yaml
from kopf._core.engines import peering

from finetune_operator.main import ensure_identity

CHART = Path(__file__).resolve().parents[3] / "charts" / "finetune-operator"


def no_passwd_entry():
    raise KeyError("getpwuid(): uid not found: 65532")


def test_without_a_user_name_kopf_is_named_after_the_host(monkeypatch):
    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    monkeypatch.delenv("POD_ID", raising=False)
    monkeypatch.delenv("USER", raising=False)
    with pytest.raises(KeyError):  # what the operator image did as uid 65532 before: kopf exited at start
        peering.detect_own_id(manual=False)
    monkeypatch.setattr("socket.gethostname", lambda: "operator-7d9f-abcde")
    ensure_identity()
    assert peering.detect_own_id(manual=False) == "operator-7d9f-abcde"


def test_a_given_pod_id_and_a_known_user_are_left_as_they_are(monkeypatch):
    env = {"POD_ID": "from-the-chart"}
    monkeypatch.setattr(getpass, "getuser", no_passwd_entry)
    ensure_identity(env)
    assert env == {"POD_ID": "from-the-chart"}
    monkeypatch.setattr(getpass, "getuser", lambda: "alice")
    env = {}
    ensure_identity(env)
    assert env == {}


def test_chart_names_kopf_after_the_pod():
    text = (CHART / "templates" / "deployment.yaml").read_text()
    block = text[text.index("          env:"):text.index("          ports:")]
    env = yaml.safe_load("\n".join(line for line in block.splitlines() if "{{" not in line))
    pod_id = next(e for e in env["env"] if e["name"] == "POD_ID")
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
