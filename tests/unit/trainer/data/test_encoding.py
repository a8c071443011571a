"""Encoding per format: what is trained, BOS/EOS handling, maxLength (truncate vs drop) and the report's counts."""

from __future__ import annotations

import pytest

from finetune_trainer.data.encoding import NOTHING_TO_TRAIN, TOO_LONG, DataReport, encode, encode_all
from finetune_trainer.data.records import normalize

EOS = "<|im_end|>"


def record(fmt: str, obj: dict, line: int = 1):
    return normalize(obj, fmt, "train.jsonl", line)


def test_text_trains_every_token_and_appends_eos(tiny_tokenizer, good, trained_runs):
    ex = encode(record("text", good["text"]), tiny_tokenizer, max_length=512, objective="cpt")
    ids = tiny_tokenizer(good["text"]["text"], add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == ids + [tiny_tokenizer.eos_token_id]  # no BOS: this tokenizer never adds one
    assert ex["labels"][0] == -100  # the first token has nothing before it to be predicted from
    assert ex["labels"][1:] == ex["input_ids"][1:]
    assert trained_runs(tiny_tokenizer, ex) == [tiny_tokenizer.decode(ids[1:]) + EOS]


def test_text_gets_one_bos_when_the_tokenizer_adds_one(bos_tokenizer, good):
    bos = bos_tokenizer.bos_token_id
    ex = encode(record("text", good["text"]), bos_tokenizer, max_length=512)
    assert ex["input_ids"][0] == bos and ex["input_ids"][1] != bos and ex["input_ids"][-1] == bos_tokenizer.eos_token_id
    already = encode(record("text", {"text": "<s>The quick brown fox."}), bos_tokenizer, max_length=512)
    assert already["input_ids"].count(bos) == 1


def test_chat_never_gets_a_bos_the_template_does_not_write(bos_tokenizer, chat, trained_runs):
    ex = encode(record("messages", {"messages": chat}), bos_tokenizer, max_length=512)
    assert bos_tokenizer.bos_token_id not in ex["input_ids"]
    assert trained_runs(bos_tokenizer, ex) == ["even" + EOS, "Tuesday" + EOS]


def test_plain_prompt_completion_masks_prompt_trains_completion_and_eos(tiny_tokenizer, good, trained_runs,
                                                                        masked_text):
    ex = encode(record("prompt-completion", good["prompt-completion"]), tiny_tokenizer, max_length=512)
    # " even" is one token with the prompt's trailing space; it is trained, as trl's boundary rule does.
    assert trained_runs(tiny_tokenizer, ex) == [" even" + EOS]
    assert masked_text(tiny_tokenizer, ex) == "Is 1234 even or odd?"


def test_conversational_prompt_completion_trains_only_the_completion(tiny_tokenizer, chat, trained_runs):
    obj = {"prompt": chat[:4], "completion": chat[4:]}  # the prompt holds an assistant turn too: not trained
    ex = encode(record("prompt-completion", obj), tiny_tokenizer, max_length=512)
    assert trained_runs(tiny_tokenizer, ex) == ["Tuesday" + EOS]


def test_alpaca_trains_the_output(tiny_tokenizer, good, trained_runs, masked_text):
    ex = encode(record("alpaca", good["alpaca"]), tiny_tokenizer, max_length=512)
    assert trained_runs(tiny_tokenizer, ex) == ["chat" + EOS]
    assert "Translate to French:\n\ncat" in masked_text(tiny_tokenizer, ex)


def test_sharegpt_masks_system_and_user(tiny_tokenizer, good, trained_runs, masked_text):
    ex = encode(record("sharegpt", good["sharegpt"]), tiny_tokenizer, max_length=512)
    assert trained_runs(tiny_tokenizer, ex) == ["even" + EOS]
    assert "Answer briefly." in masked_text(tiny_tokenizer, ex)


def test_cpt_objective_trains_prompts_too(tiny_tokenizer, chat):
    ex = encode(record("messages", {"messages": chat}), tiny_tokenizer, max_length=512, objective="cpt")
    assert ex["labels"][1:] == ex["input_ids"][1:]


def test_preference_plain_strings(tiny_tokenizer, good):
    ex = encode(record("preference", good["preference"]), tiny_tokenizer, max_length=512, objective="dpo")
    decoded = {k: tiny_tokenizer.decode(v) for k, v in ex.items()}
    assert decoded == {"prompt_ids": "Is 1234 even or odd?", "chosen_ids": " even" + EOS,
                       "rejected_ids": " odd" + EOS}


def test_preference_conversational(tiny_tokenizer, chat):
    obj = {"prompt": chat[:2], "chosen": [chat[2]], "rejected": [{"role": "assistant", "content": "odd"}]}
    ex = encode(record("preference", obj), tiny_tokenizer, max_length=512, objective="orpo")
    decoded = {k: tiny_tokenizer.decode(v) for k, v in ex.items()}
    assert decoded["prompt_ids"].endswith("<|im_start|>assistant\n")
    assert (decoded["chosen_ids"], decoded["rejected_ids"]) == ("even" + EOS, "odd" + EOS)


def test_objective_must_fit_the_records(tiny_tokenizer, good):
    with pytest.raises(ValueError, match="dpo/orpo need"):
        encode(record("text", good["text"]), tiny_tokenizer, max_length=512, objective="dpo")
    with pytest.raises(ValueError, match="preference data needs dpo or orpo"):
        encode(record("preference", good["preference"]), tiny_tokenizer, max_length=512, objective="sft")


def long_chat(n_words: int) -> dict:
    return {"messages": [{"role": "user", "content": "Is 1234 even or odd?"},
                         {"role": "assistant", "content": " ".join(["even"] * n_words)}]}


def test_truncate_keeps_the_first_max_length_tokens_and_counts(tiny_tokenizer):
    records = [record("messages", long_chat(2)), record("messages", long_chat(40)), record("messages", long_chat(3))]
    full = encode(records[1], tiny_tokenizer, max_length=512)
    examples, report = encode_all(records, tiny_tokenizer, max_length=32, too_long="truncate")
    assert len(examples) == 3 and len(examples[1]["input_ids"]) == 32
    assert examples[1]["input_ids"] == full["input_ids"][:32] and examples[1]["labels"] == full["labels"][:32]
    assert (report.read, report.kept, report.truncated, report.dropped) == (3, 3, 1, {})
    assert report.tokens == sum(len(e["input_ids"]) for e in examples)
    assert report.trainable_tokens == sum(sum(lab != -100 for lab in e["labels"]) for e in examples)
    assert "1 of 3 examples were longer than maxLength=32 and were truncated" in report.summary()


def test_truncation_that_leaves_nothing_to_train_drops_and_counts_apart(tiny_tokenizer):
    long_prompt = {"messages": [{"role": "user", "content": "Is 1234 even or odd? " * 10},
                                {"role": "assistant", "content": "even"}]}
    examples, report = encode_all([record("messages", long_prompt), record("messages", long_chat(2))],
                                  tiny_tokenizer, max_length=32)
    assert len(examples) == 1
    assert (report.truncated, report.dropped) == (0, {NOTHING_TO_TRAIN: 1})
    assert "1 of 2 examples were dropped because no answer token fits in their first 32 tokens" in report.summary()


def test_drop_leaves_long_rows_out(tiny_tokenizer):
    records = [record("messages", long_chat(2)), record("messages", long_chat(40))]
    examples, report = encode_all(records, tiny_tokenizer, max_length=32, too_long="drop")
    assert len(examples) == 1 and len(examples[0]["input_ids"]) <= 32
    assert (report.kept, report.truncated, report.dropped) == (1, 0, {TOO_LONG: 1})
    assert "1 of 2 examples were longer than maxLength=32 and were dropped" in report.summary()


def test_preference_truncation_cuts_answers_to_fit(tiny_tokenizer):
    obj = {"prompt": "Is 1234 even or odd?", "chosen": " even" * 30, "rejected": " odd"}
    report = DataReport(max_length=20)
    ex = encode(record("preference", obj), tiny_tokenizer, max_length=20, objective="dpo", report=report)
    assert len(ex["prompt_ids"]) + len(ex["chosen_ids"]) == 20
    assert ex["rejected_ids"] == tiny_tokenizer(" odd<|im_end|>", add_special_tokens=False)["input_ids"]
    assert (report.truncated, report.kept, report.trainable_tokens) == (1, 1, len(ex["chosen_ids"]) + 2)
    assert encode(record("preference", obj), tiny_tokenizer, max_length=20, objective="dpo", too_long="drop") is None
