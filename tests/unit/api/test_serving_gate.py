"""The ReadyToServe verdict: a succeeded run is ready unless spec.serving.gate's thresholds say otherwise."""

import pytest

from finetune_api.serving import ServingGate, gate_verdict, ready_to_serve
from finetune_api.status import Result


@pytest.mark.parametrize("gate, loss, em, want", [
    (None, None, None, ("True", "NoGate")),
    ({"maxEvalLoss": 1.5}, 1.2, None, ("True", "GatePassed")),
    ({"maxEvalLoss": 1.5}, 1.5, None, ("True", "GatePassed")),
    ({"maxEvalLoss": 1.5}, 1.8, 0.9, ("False", "GateFailed")),
    ({"minExactMatch": 0.6}, 1.8, 0.7, ("True", "GatePassed")),
    ({"maxEvalLoss": 1.5, "minExactMatch": 0.6}, 1.2, 0.5, ("False", "GateFailed")),
    ({"maxEvalLoss": 1.5, "minExactMatch": 0.6}, 1.2, None, ("False", "MetricMissing")),
])
def test_gate_verdict(gate, loss, em, want):
    v = gate_verdict(ServingGate.model_validate(gate) if gate else None, loss, em)
    assert (v.status, v.reason) == want


def test_the_message_says_each_figure_against_its_threshold_and_what_to_do():
    v = gate_verdict(ServingGate(max_eval_loss=1.5, min_exact_match=0.6), 1.8, 0.75)
    assert v.message.startswith("held-out evaluation misses spec.serving.gate: eval loss 1.8 is not <= 1.5; "
                                "exact match 0.75 >= 0.6.")
    assert "train longer or on more data" in v.message
    missing = gate_verdict(ServingGate(min_exact_match=0.6), 1.0, None)
    assert "needs the exact match of the end-of-run evaluation" in missing.message


def test_ready_to_serve_reads_status_result():
    gate = ServingGate(max_eval_loss=1.0)
    assert ready_to_serve(gate, Result(final_eval_loss=0.9)).reason == "GatePassed"
    assert ready_to_serve(gate, None).reason == "MetricMissing"
    assert ready_to_serve(None, None).status == "True"
