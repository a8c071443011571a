"""The checked-in CRD is exactly what the models generate, and is a structural schema the API server takes."""

from pathlib import Path

from finetune_api.crd import CRD_FILE, build_crd, render_crd_yaml
from finetune_api.rules import RULES

REPO = Path(__file__).resolve().parents[3]


def test_checked_in_crd_is_fresh():
    on_disk = (REPO / "crds" / CRD_FILE).read_text()
    assert on_disk == render_crd_yaml(), "crds/ is stale: run `make crd` (python -m finetune_api.crd) and commit"


def _schema():
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node, path="", out=None):
    out = [] if out is None else out
    out.append((path, node))
    for k, v in node.get("properties", {}).items():
        _walk(v, f"{path}.{k}", out)
    if "items" in node:
        _walk(node["items"], f"{path}[]", out)
    return out


def test_schema_is_structural():
    for path, node in _walk(_schema()):
        for key in ("$ref", "anyOf", "title", "patternProperties", "propertyNames"):  # no such thing in a CRD
            assert key not in node, f"{path} has {key}"
        assert "type" in node or node.get("x-kubernetes-int-or-string") or node.get(
            "x-kubernetes-preserve-unknown-fields"), f"{path} has no type"


def test_every_spec_field_has_a_description():
    for path, node in _walk(_schema()):
        if path.startswith(".spec.") and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description (kubectl explain would show nothing)"


def test_enums_ranges_and_required_fields_are_in_the_schema():
    spec = _schema()["properties"]["spec"]
    assert spec["required"] == ["model", "dataset", "output"]
    assert spec["properties"]["method"]["properties"]["type"]["enum"] == ["lora", "qlora", "full", "spectrum"]
    lr = spec["properties"]["training"]["properties"]["learningRate"]
    assert lr["minimum"] == 0 and lr["exclusiveMinimum"] is True and lr["maximum"] == 1
    mbs = spec["properties"]["training"]["properties"]["microBatchSize"]
    assert mbs["x-kubernetes-int-or-string"] is True
    assert "self >= 1" in mbs["x-kubernetes-validations"][0]["rule"]


def test_every_cross_field_rule_and_immutability_is_attached():
    attached = {v["rule"] for _, node in _walk(_schema()) for v in node.get("x-kubernetes-validations", [])}
    for r in RULES:
        assert r.cel in attached, f"rule not in the CRD: {r.message}"
    spec_rules = [v["rule"] for v in _schema()["properties"]["spec"]["x-kubernetes-validations"]]
    assert any("oldSelf.model" in r for r in spec_rules)
    assert not any("oldSelf.suspend" in r for r in spec_rules), "suspend must stay mutable"


def test_crd_conventions():
    crd = build_crd()
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["ftj"] and "finetune" in names["categories"]
    v = crd["spec"]["versions"][0]
    assert v["subresources"] == {"status": {}}
    assert [c["name"] for c in v["additionalPrinterColumns"]][:3] == ["Phase", "Progress", "Loss"]


def test_checked_in_spec_doc_is_fresh():
    from finetune_api.docs import DOC_FILE, render_spec_doc

    assert (REPO / "docs" / DOC_FILE).read_text() == render_spec_doc(), "docs/spec.md is stale: run `make crd`"


def test_kubectl_explain_shows_types_and_defaults_in_the_description():
    # kubectl explain prints <Object> for an untyped union and never prints a schema default: the text must say both
    training = _schema()["properties"]["spec"]["properties"]["training"]["properties"]
    assert training["microBatchSize"]["description"].startswith("An integer >= 1, or `auto`.")
    assert training["microBatchSize"]["description"].endswith("Default: `auto`.")
    assert training["gradientCheckpointing"]["description"].startswith("`auto`, true or false.")
    assert training["learningRate"]["description"].endswith("Default: `0.0002`.")
    assert "overriding" not in training["maxSteps"]["description"]  # it said "overriding epochs" while a rule forbids both


def test_names_the_operator_would_refuse_are_refused_at_admission():
    rule = _schema()["properties"]["metadata"]["properties"]["name"]["x-kubernetes-validations"][0]
    assert "size() <= 63" in rule["rule"] and "matches(" in rule["rule"]


def test_a_job_no_operator_has_seen_says_why_it_waits():
    default = _schema()["properties"]["status"]["default"]
    assert default["phase"] == "Pending" and "operator" in default["message"]


def test_wide_columns_show_the_model_whether_path_or_hub_and_the_default_method():
    cols = {c["name"]: c for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert cols["Model"]["jsonPath"] == ".spec.model['hubId','path']"
    method = _schema()["properties"]["spec"]["properties"]["method"]
    assert method["default"] == {} and method["properties"]["type"]["default"] == "lora"
