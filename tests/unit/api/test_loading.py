"""Bad specs get one line per problem naming the file, the line and the field path."""

import pytest

from finetune_api import SpecError, load_job, load_job_text

HEAD = "apiVersion: finetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: demo}\nspec:\n"
OK_BODY = ("  model: {path: /m}\n  dataset: {paths: [/d.jsonl], format: alpaca}\n  output: {path: /o}\n")


def errors_of(body: str) -> str:
    with pytest.raises(SpecError) as e:
        load_job_text(HEAD + body, source="job.yaml")
    return str(e.value)


def test_unknown_field_names_path_line_allowed_and_suggestion():
    msg = errors_of(OK_BODY + "  trainig: {epochs: 1}\n")
    assert "job.yaml:8: spec.trainig: unknown field 'trainig'; did you mean 'training'?" in msg
    assert "allowed: model, dataset, method" in msg


def test_nested_unknown_field():
    msg = errors_of(OK_BODY + "  method: {type: lora, lora: {rnak: 8}}\n")
    assert "spec.method.lora.rnak: unknown field" in msg and "did you mean 'rank'" in msg


def test_enum_value_lists_allowed_values():
    msg = errors_of(OK_BODY.replace("alpaca", "alpaka"))
    assert "job.yaml:6: spec.dataset.format:" in msg
    assert "'alpaca', 'messages', 'sharegpt', 'prompt-completion', 'text' or 'preference'" in msg
    assert "(got 'alpaka')" in msg


def test_range_error_names_field_and_value():
    msg = errors_of(OK_BODY + "  training:\n    learningRate: -1\n")
    assert "job.yaml:9: spec.training.learningRate: Input should be greater than 0 (got -1)" in msg


def test_auto_or_number_union_is_one_message():
    msg = errors_of(OK_BODY + "  training: {microBatchSize: zero}\n")
    assert msg.count("microBatchSize") == 1
    assert "'auto' or" in msg


def test_missing_required_field():
    msg = errors_of("  model: {path: /m}\n  output: {path: /o}\n")
    assert "spec.dataset: required field is missing" in msg


def test_cross_field_rule_message():
    msg = errors_of(OK_BODY + "  objective: {type: dpo}\n")
    assert "dpo/orpo trains on preference data: set spec.dataset.format to preference" in msg


def test_several_problems_reported_together():
    msg = errors_of(OK_BODY + "  training: {learningRate: 0, seed: -3}\n  suspend: maybe\n")
    assert "learningRate" in msg and "seed" in msg and "suspend" in msg


def test_not_yaml_names_line(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text(HEAD + "  model: {path: /m\n  output: [\n")
    with pytest.raises(SpecError, match=r"job.yaml:\d+:\d+: not valid YAML"):
        load_job(f)


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml: no such file"):
        load_job(tmp_path / "nope.yaml")


def test_two_documents_refused_at_the_second_one():
    with pytest.raises(SpecError, match="job.yaml:8: a second YAML document starts here"):  # the --- line
        load_job_text(HEAD + OK_BODY + "---\n" + HEAD + OK_BODY, source="job.yaml")


def test_a_trailing_document_marker_is_not_a_second_job():
    assert load_job_text(HEAD + OK_BODY + "---\n").metadata.name == "demo"


def test_wrong_kind_and_api_version():
    with pytest.raises(SpecError) as e:
        load_job_text(HEAD.replace("FineTuneJob", "Job").replace("v1alpha1", "v1") + OK_BODY)
    assert "kind" in str(e.value) and "apiVersion" in str(e.value)
