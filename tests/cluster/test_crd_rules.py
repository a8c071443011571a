"""The API server enforces the spec: every cross-field rule's CEL form refuses the same bad spec pydantic does,
accepts the same good one, and names the field; schema errors (enums, ranges, unknown fields) too.

The cases are tests/unit/api/test_rules.py's, so the CEL and Python forms of each rule are held to one table.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetunejobs.finetune.io.yaml"


def _rule_cases():
    spec = importlib.util.spec_from_file_location("rule_cases", REPO / "tests" / "unit" / "api" / "test_rules.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CASES, mod.spec


CASES, make_spec = _rule_cases()


@pytest.fixture(scope="module")
def crd_installed(control_plane):
    if control_plane.kubectl("get", "crd", "finetunejobs.finetune.io").returncode != 0:
        r = control_plane.kubectl("create", "-f", str(CRD))
        assert r.returncode == 0, f"the API server refused the generated CRD: {r.stderr}"
    control_plane.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.finetune.io", "--timeout=60s",
                          check=True)
    return control_plane


def _dry_run(cp, namespace, spec: dict, name: str = "rules"):
    obj = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    return cp.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(obj))


@pytest.mark.parametrize("bad,good,fragment", CASES, ids=[c[2][:40] for c in CASES])
def test_api_server_applies_each_cross_field_rule(crd_installed, namespace, bad, good, fragment):
    refused = _dry_run(crd_installed, namespace, make_spec(**bad))
    assert refused.returncode != 0, f"the API server accepted a spec that breaks: {fragment}"
    assert fragment in refused.stderr, refused.stderr
    accepted = _dry_run(crd_installed, namespace, make_spec(**good))
    assert accepted.returncode == 0, accepted.stderr


@pytest.mark.parametrize("patch,field", [
    ({"method__type": "lorax"}, "spec.method.type"),
    ({"training__learningRate": 0}, "spec.training.learningRate"),
    ({"training__microBatchSize": 0}, "spec.training.microBatchSize"),
    ({"training__microBatchSize": "big"}, "spec.training.microBatchSize"),
    ({"training__gradientCheckpointing": "sometimes"}, "spec.training.gradientCheckpointing"),
    ({"method__lora": {"targetModules": []}}, "spec.method.lora.targetModules"),
    ({"method__spectrum": {"fraction": 1.5}, "method__type": "spectrum"}, "spec.method.spectrum.fraction"),
])
def test_schema_errors_name_the_field(crd_installed, namespace, patch, field):
    r = _dry_run(crd_installed, namespace, make_spec(**patch))
    assert r.returncode != 0 and field in r.stderr, r.stderr


def test_unknown_field_is_refused_with_its_name(crd_installed, namespace):
    spec = make_spec()
    spec["trainig"] = {"epochs": 1}
    obj = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
           "metadata": {"name": "typo", "namespace": namespace}, "spec": spec}
    r = crd_installed.kubectl("create", "--dry-run=server", "--validate=strict", "-f", "-", input=json.dumps(obj))
    assert r.returncode != 0 and 'unknown field "spec.trainig"' in r.stderr, r.stderr


@pytest.mark.parametrize("value", ["auto", True, False])
def test_auto_or_boolean_values_are_accepted(crd_installed, namespace, value):
    r = _dry_run(crd_installed, namespace, make_spec(training__gradientCheckpointing=value,
                                                     training__microBatchSize=4 if value is True else "auto"))
    assert r.returncode == 0, r.stderr


def test_every_shipped_example_is_accepted(crd_installed, namespace):
    import yaml

    for path in sorted((REPO / "examples").rglob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))  # examples/kueue/queues.yaml holds several objects
        if len(docs) != 1 or docs[0].get("kind") != "FineTuneJob":
            continue
        doc = docs[0]
        r = _dry_run(crd_installed, namespace, doc["spec"], name=doc["metadata"]["name"])
        assert r.returncode == 0, f"{path}: {r.stderr}"


def test_a_job_no_operator_has_seen_says_why_and_wide_columns_are_filled(crd_installed, namespace):
    cp = crd_installed
    spec = make_spec()
    spec["model"] = {"path": "/opt/models/tiny"}
    spec.pop("method", None)
    obj = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
           "metadata": {"name": "orphan", "namespace": namespace}, "spec": spec}
    r = cp.kubectl("create", "-f", "-", input=json.dumps(obj))  # no operator runs in this module
    assert r.returncode == 0, r.stderr
    r = cp.kubectl("get", "ftj", "orphan", "-n", namespace, "-o", "wide", "--no-headers")
    cols = r.stdout.split()
    assert cols[1] == "Pending" and "lora" in cols and "/opt/models/tiny" in cols, r.stdout  # PHASE, METHOD, MODEL
    status = cp.get_json("ftj", "orphan", "-n", namespace)["status"]
    assert "No finetune-operator has reconciled this job yet" in status["message"], status


@pytest.mark.parametrize("name", ["my.dotted.job", "a" * 70])
def test_names_the_operator_could_not_use_are_refused_at_admission(crd_installed, namespace, name):
    r = _dry_run(crd_installed, namespace, make_spec(), name=name)
    assert r.returncode != 0 and "metadata.name" in r.stderr and "not a DNS label" in r.stderr, r.stderr
