"""Multi-turn prompt masking with the real chat templates of the seeds' models (templates/README.md says where each
comes from): every reply and its end-of-turn marker train, nothing else does, and the token ids are those of the
model's own `apply_chat_template`.

The tokenizer is the tiny test one with each model's special tokens added (as its real tokenizer has them), so a
marker such as `<|eot_id|>` is one token, as it is for the real model.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from finetune_trainer.data import DataError
from finetune_trainer.data.chat import render, resolve_template
from finetune_trainer.data.encoding import encode
from finetune_trainer.data.records import Record

TEMPLATES = Path(__file__).parent / "templates"

CONVERSATION = [
    {"role": "system", "content": "Answer in three words."},
    {"role": "user", "content": "Is 1234 even?"},
    {"role": "assistant", "content": "Yes, it is."},
    {"role": "user", "content": "And 77?"},
    {"role": "assistant", "content": "No, it's odd."},
    {"role": "user", "content": "What about 0?"},
    {"role": "assistant", "content": "Zero is even."},
]
REPLIES = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]

# template file -> (special tokens, bos token, expected trained runs with the reply text as {})
CASES = {
    "llama-3.1-instruct": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                           "<|begin_of_text|>", ["{}<|eot_id|>"] * 3),
    "gemma-2-it": (["<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", ["{}<end_of_turn>"] * 3),
    "gemma-3-it": (["<bos>", "<start_of_turn>", "<end_of_turn>"], "<bos>", ["{}<end_of_turn>"] * 3),
    "qwen2.5-instruct": (["<|im_start|>", "<|im_end|>"], None, ["{}<|im_end|>"] * 3),
    # Qwen3 gives only the last reply (after the last user turn) an empty think block: what its template trains
    "qwen3": (["<|im_start|>", "<|im_end|>", "<think>", "</think>"], None,
              ["{}<|im_end|>", "{}<|im_end|>", "<think>\n\n</think>\n\n{}<|im_end|>"]),
    # harmony: the channel header is the model's to write; earlier replies end with <|end|>, the last with <|return|>
    "gpt-oss": (["<|start|>", "<|end|>", "<|return|>", "<|channel|>", "<|message|>"], None,
                ["<|channel|>final<|message|>{}<|end|>"] * 2 + ["<|channel|>final<|message|>{}<|return|>"]),
}


@pytest.fixture(scope="module")
def tokenizers(tiny_tokenizer):
    out = {}
    for name, (special, bos, _) in CASES.items():
        tok = copy.deepcopy(tiny_tokenizer)
        tok.add_special_tokens({"additional_special_tokens": special})
        if bos:
            tok.bos_token = bos
        tok.chat_template = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
        out[name] = tok
    return out


def conversation_for(name: str) -> list[dict]:
    if name == "gemma-2-it":  # its template refuses a system turn (raise_exception): the conversation without it
        return CONVERSATION[1:]
    return CONVERSATION


def trained_runs(tok, ex) -> list[str]:
    runs, cur = [], []
    for t, lab in zip(ex["input_ids"], ex["labels"]):
        if lab != -100:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    runs += [cur] if cur else []
    return [tok.decode(r) for r in runs]


@pytest.mark.parametrize("name", list(CASES))
def test_every_reply_and_its_end_marker_train_and_nothing_else(tokenizers, name):
    tok = tokenizers[name]
    messages = conversation_for(name)
    template = resolve_template(tok)
    ex = encode(Record("chat", {"messages": messages}, "train.jsonl", 3), tok, max_length=4096, template=template)
    expected = [run.format(reply) for run, reply in zip(CASES[name][2], REPLIES)]
    assert trained_runs(tok, ex) == expected
    untrained = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"]) if lab == -100])
    for m in messages:
        if m["role"] != "assistant":
            assert m["content"] in untrained, f"{m['role']} turn must be context, not trained"


@pytest.mark.parametrize("name", list(CASES))
def test_token_ids_are_the_models_own_rendering(tokenizers, name):
    tok = tokenizers[name]
    messages = conversation_for(name)
    ex = encode(Record("chat", {"messages": messages}, "t.jsonl", 1), tok, max_length=4096,
                template=resolve_template(tok))
    ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ex["input_ids"] == ids


@pytest.mark.parametrize("name", ["gpt-oss", "qwen3"])
def test_templates_that_are_not_prefix_stable_are_handled(tokenizers, name):
    """Rendering the first reply as the last turn differs from how the whole conversation renders it: a rule
    that needs each rendered prefix to be a prefix of the whole would refuse every multi-turn conversation."""
    tok = tokenizers[name]
    template = resolve_template(tok)
    full = render(CONVERSATION, tok, template)
    assert not full.startswith(render(CONVERSATION[:3], tok, template))
    ex = encode(Record("chat", {"messages": CONVERSATION}, "t.jsonl", 1), tok, max_length=4096, template=template)
    assert len(trained_runs(tok, ex)) == 3


def test_gemma_2_refusing_a_system_turn_names_the_file_line_and_template(tokenizers):
    tok = tokenizers["gemma-2-it"]
    with pytest.raises(DataError) as e:
        encode(Record("chat", {"messages": CONVERSATION}, "train.jsonl", 12), tok, max_length=4096,
               template=resolve_template(tok))
    assert str(e.value).startswith("train.jsonl:12: the chat template of tokenizer")
    assert "System role not supported" in str(e.value)


def test_a_reply_the_template_rewrites_is_refused_not_mistrained(tokenizers):
    """Qwen3 splits a reply at `</think>` and writes only what follows: the reply as given is not in the text."""
    tok = tokenizers["qwen3"]
    messages = CONVERSATION[:2] + [{"role": "assistant", "content": "<think>hmm</think>\n\nYes."}] + CONVERSATION[3:5]
    with pytest.raises(DataError, match="does not write reply 2's content verbatim"):
        encode(Record("chat", {"messages": messages}, "t.jsonl", 4), tok, max_length=4096,
               template=resolve_template(tok))
