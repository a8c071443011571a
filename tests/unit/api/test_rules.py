"""Each cross-field rule refuses what it should and lets the valid neighbour through (Python side).

The same rules' CEL forms are enforced by a real API server in tests/cluster.
"""

import copy

import pytest
from pydantic import ValidationError

from finetune_api import FineTuneJobSpec
from finetune_api.rules import RULES
from support.spec_patch import apply_changes

BASE = {"model": {"path": "/m"}, "dataset": {"paths": ["/d.jsonl"], "format": "alpaca"}, "output": {"path": "/o"}}


def spec(**patch):
    return apply_changes(copy.deepcopy(BASE), patch, sep="__")


CASES = [  # (bad patch, good patch, expected message fragment)
    (dict(model__hubId="org/m"), dict(model__hubId="org/m", model__path=None), "exactly one of spec.model.path"),
    (dict(dataset__paths=None), dict(dataset__paths=None, dataset__hubId="org/d"), "exactly one of spec.dataset.paths"),
    (dict(dataset__validationSplit=0.1, dataset__validationPaths=["/v.jsonl"]), dict(dataset__validationSplit=0.1),
     "at most one of spec.dataset.validationSplit"),
    (dict(training__epochs=1, training__maxSteps=5), dict(training__maxSteps=5), "at most one of spec.training.epochs"),
    (dict(method__type="full", method__lora={"rank": 4}), dict(method__type="full"), "spec.method.lora applies only"),
    (dict(method__spectrum={"fraction": 0.5}), dict(method__type="spectrum", method__spectrum={"fraction": 0.5}),
     "spec.method.spectrum applies only"),
    (dict(output__volume={"claimName": "a", "create": {"size": "1Gi"}}), dict(output__volume={"claimName": "a"}),
     "exactly one of spec.output.volume.claimName"),
    (dict(distributed__cpuOffload=True, distributed__strategy="ddp"),
     dict(distributed__cpuOffload=True, distributed__strategy="deepspeed-zero3"), "cpuOffload needs a sharded"),
    (dict(distributed__strategy="deepspeed-zero2", distributed__gpusPerNode=0),
     dict(distributed__strategy="deepspeed-zero2", distributed__gpusPerNode=2), "deepspeed-* needs GPUs"),
    (dict(method__type="qlora", distributed__gpusPerNode=0), dict(method__type="qlora"), "qlora quantises"),
    (dict(objective__type="dpo"), dict(objective__type="dpo", dataset__format="preference"), "dpo/orpo trains on preference"),
    (dict(dataset__format="preference"), dict(dataset__format="preference", objective__type="orpo"),
     "format preference needs"),
    (dict(dataset__format="preference", objective__type="dpo", dataset__packing=True),
     dict(dataset__format="preference", objective__type="dpo"), "packing does not apply to preference"),
    (dict(method__type="full", output__mergeAdapter=True), dict(output__mergeAdapter=True), "mergeAdapter needs an adapter"),
    (dict(serving__gate={}, dataset__validationSplit=0.1),
     dict(serving__gate={"maxEvalLoss": 1.0}, dataset__validationSplit=0.1), "spec.serving.gate sets no threshold"),
    (dict(serving__gate={"maxEvalLoss": 1.0}),
     dict(serving__gate={"maxEvalLoss": 1.0}, dataset__validationPaths=["/v.jsonl"]), "judges the end-of-run evaluation"),
    (dict(serving__gate={"minExactMatch": 0.5}, dataset__validationSplit=0.1, dataset__format="preference",
          objective__type="dpo"),
     dict(serving__gate={"maxEvalLoss": 2.0}, dataset__validationSplit=0.1, dataset__format="preference",
          objective__type="dpo"), "minExactMatch needs objective sft or cpt"),
    (dict(training__microBatchSize=64, training__globalBatchSize=4),
     dict(training__microBatchSize=64, training__globalBatchSize=4, training__gradientAccumulation=1),
     "microBatchSize is larger than spec.training.globalBatchSize"),
    (dict(model__volume={"claimName": "m", "subPath": "../other"}), dict(model__volume={"claimName": "m", "subPath": "a/b"}),
     "spec.model.volume.subPath must be a relative path"),
    (dict(dataset__volume={"claimName": "d", "subPath": "/abs"}), dict(dataset__volume={"claimName": "d", "subPath": "x"}),
     "spec.dataset.volume.subPath must be a relative path"),
    (dict(output__path="../../etc/x", output__volume={"claimName": "o"}),
     dict(output__path="runs/x", output__volume={"claimName": "o"}), "must stay inside spec.output.volume"),
    (dict(scheduling__tolerations=[{"key": "gpu", "operator": "Exists", "value": "yes"}]),
     dict(scheduling__tolerations=[{"key": "gpu", "operator": "Exists"}]), "value must be empty when operator is Exists"),
    (dict(scheduling__tolerations=[{"operator": "Equal", "value": "x"}]),
     dict(scheduling__tolerations=[{"operator": "Exists"}]), "key is empty, which needs operator Exists"),
    (dict(scheduling__tolerations=[{"key": "k", "operator": "Exists", "tolerationSeconds": 5}]),
     dict(scheduling__tolerations=[{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
     "tolerationSeconds needs effect NoExecute"),
]


@pytest.mark.parametrize("bad,good,fragment", CASES, ids=[c[2][:40] for c in CASES])
def test_rule_refuses_bad_and_accepts_good(bad, good, fragment):
    with pytest.raises(ValidationError, match=fragment.replace("*", r"\*").replace("(", r"\(")):
        FineTuneJobSpec.model_validate(spec(**bad))
    FineTuneJobSpec.model_validate(spec(**good))


def test_every_rule_is_exercised_here():
    messages = [r.message for r in RULES]
    for m in messages:
        assert any(c[2] in m for c in CASES), f"no test case for rule: {m}"


@pytest.mark.parametrize("field,value", [("method__spectrum", {"fraction": 0}), ("method__spectrum", {"fraction": 1.5})])
def test_spectrum_fraction_range(field, value):
    with pytest.raises(ValidationError, match="fraction"):
        FineTuneJobSpec.model_validate(spec(method__type="spectrum", **{field: value}))
