"""The spec round-trips, fills defaults, and every shipped example validates."""

from pathlib import Path

import pytest
import yaml

from finetune_api import FineTuneJob, load_job, load_job_text

REPO = Path(__file__).resolve().parents[3]
# every FineTuneJob we ship (examples/kueue/queues.yaml holds Kueue's objects: tests/cluster/test_kueue.py)
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if "kind: FineTuneJob" in p.read_text())

MINIMAL = """
apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: demo}
spec:
  model: {path: /models/tiny}
  dataset: {paths: [/data/train.jsonl], format: alpaca}
  output: {path: /out}
"""


def test_minimal_spec_gets_documented_defaults():
    job = load_job_text(MINIMAL)
    s = job.spec
    assert (s.method.type, s.objective.type, s.distributed.strategy) == ("lora", "sft", "auto")
    assert s.lora.rank == 16 and s.lora.target_modules == "all-linear"
    assert s.training.micro_batch_size == "auto" and s.training.gradient_checkpointing == "auto"
    assert s.model.trust_remote_code is False


def test_round_trip_wire_format_is_stable():
    job = load_job_text(MINIMAL)
    wire = job.to_wire()
    assert wire["spec"]["model"] == {"path": "/models/tiny", "revision": "main", "dtype": "auto",
                                     "attnImplementation": "auto", "trustRemoteCode": False}
    again = FineTuneJob.model_validate(wire)
    assert again == job
    assert FineTuneJob.model_validate(yaml.safe_load(yaml.safe_dump(wire))).to_wire() == wire


def test_snake_case_and_camel_case_both_accepted_in_python():
    job = load_job_text(MINIMAL)
    assert job.spec.training.model_copy(update={"learning_rate": 1e-3}).learning_rate == 1e-3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_example_validates(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    if [d.get("kind") for d in docs] != ["FineTuneJob"]:
        assert all(d.get("apiVersion") and d.get("kind") for d in docs), path  # Kubernetes objects (cluster tier)
        pytest.skip("not a FineTuneJob: applied by tests/cluster/test_readme.py")
    load_job(path)
