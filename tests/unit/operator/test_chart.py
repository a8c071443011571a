"""The Helm chart's static parts: its CRD is the generated one, its values validate against values.schema.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "finetune-operator"


def test_chart_crd_is_the_generated_crd():
    assert (CHART / "crds" / "finetunejobs.finetune.io.yaml").read_text() == \
        (REPO / "crds" / "finetunejobs.finetune.io.yaml").read_text(), \
        "copy crds/finetunejobs.finetune.io.yaml into charts/finetune-operator/crds/"


def test_default_values_satisfy_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)


def test_rbac_never_grants_secrets_or_wildcards():
    text = (CHART / "templates" / "rbac.yaml").read_text()
    rules = yaml.safe_load(text.split("---")[0].replace("{{", "#").replace("}}", ""))["rules"]
    for r in rules:
        assert "secrets" not in r["resources"] and "*" not in r["resources"] and "*" not in r["verbs"]
        assert "delete" not in r["verbs"] or r["resources"] == ["pods"]  # only to restart a failed group
