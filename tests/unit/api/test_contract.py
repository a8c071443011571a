"""The operator-trainer contract: a termination message round-trips, and a long one is cut, never blanked."""

from finetune_api.contract import TERMINATION_MESSAGE_LIMIT, ExitCode, TerminationMessage, gauge_name


def test_round_trip_and_camel_case_keys():
    m = TerminationMessage(outcome="Succeeded", steps=3, final_loss=0.5, output_path="/o", manifest_sha256="ab")
    text = m.to_text()
    assert '"finalLoss": 0.5' in text and TerminationMessage.from_text(text) == m


def test_a_long_error_is_cut_to_the_kubelets_limit_and_keeps_its_start():
    msg = "data.jsonl:7: " + "x" * 5000 + " é"
    text = TerminationMessage(outcome="Failed", reason="DataError", message=msg, rank=1).to_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    back = TerminationMessage.from_text(text)
    assert back.reason == "DataError" and back.rank == 1
    assert back.message.startswith("data.jsonl:7: xxx") and back.message.endswith("…") and len(back.message) > 3000


def test_a_log_tail_is_not_mistaken_for_a_message():
    assert TerminationMessage.from_text("Traceback (most recent call last): ...") is None
    assert TerminationMessage.from_text("") is None


def test_exit_codes_and_metric_names_are_the_ones_both_sides_use():
    assert (ExitCode.INPUT_ERROR, ExitCode.PREEMPTED) == (2, 143)
    assert gauge_name("step") == "finetune_step"
