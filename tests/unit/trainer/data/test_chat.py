"""Chat masking: the model is trained on assistant words and end-of-turn tokens only, whatever the template."""

from __future__ import annotations

import copy

import pytest

from finetune_trainer.data import CHATML_TEMPLATE, DataError
from finetune_trainer.data.chat import ChatTemplate, resolve_template
from finetune_trainer.data.encoding import encode
from finetune_trainer.data.records import Record

LLAMA3_LIKE = (  # end-of-turn marker and headers are not single tokens in the tiny vocab: offsets must still work
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
NOT_PREFIX_STABLE = (  # marks the last message, so earlier renders are not prefixes of later ones
    "{% for m in messages %}{% if loop.last %}[last]{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def chat_record(messages, line=1) -> Record:
    return Record("chat", {"messages": messages}, "train.jsonl", line)


def encode_chat(messages, tokenizer, template=None, **kw):
    return encode(chat_record(messages), tokenizer, max_length=512, template=template, **kw)


def test_single_turn_trains_answer_and_end_token(tiny_tokenizer, chat, trained_runs, masked_text):
    ex = encode_chat(chat[1:3], tiny_tokenizer)
    assert trained_runs(tiny_tokenizer, ex) == ["even<|im_end|>"]
    assert masked_text(tiny_tokenizer, ex) == ("<|im_start|>user\nIs 1234 even or odd?<|im_end|>\n"
                                               "<|im_start|>assistant\n\n")


def test_multi_turn_trains_every_assistant_turn_and_masks_system(tiny_tokenizer, chat, trained_runs, masked_text):
    ex = encode_chat(chat, tiny_tokenizer)
    assert trained_runs(tiny_tokenizer, ex) == ["even<|im_end|>", "Tuesday<|im_end|>"]
    untrained = masked_text(tiny_tokenizer, ex)
    for m in chat:
        if m["role"] != "assistant":
            assert m["content"] in untrained


def test_token_ids_are_those_of_the_whole_rendered_conversation(tiny_tokenizer, chat):
    ex = encode_chat(chat, tiny_tokenizer)
    assert ex["input_ids"] == tiny_tokenizer.apply_chat_template(chat, tokenize=True, return_dict=False)


def test_unicode_answer_is_trained_exactly(tiny_tokenizer, chat, trained_runs):
    """Byte-level BPE splits multi-byte characters across tokens; offsets must still cover them."""
    chat[2]["content"] = "héllo ✓ 12"
    assert trained_runs(tiny_tokenizer, encode_chat(chat[:3], tiny_tokenizer))[0] == "héllo ✓ 12<|im_end|>"


def test_other_template_with_multi_token_markers_and_bos(tiny_tokenizer, chat, trained_runs):
    template = resolve_template(tiny_tokenizer, LLAMA3_LIKE)
    ex = encode_chat(chat, tiny_tokenizer, template)
    assert trained_runs(tiny_tokenizer, ex) == ["even<|eot_id|>", "Tuesday<|eot_id|>"]
    assert ex["input_ids"][0] == tiny_tokenizer.bos_token_id and ex["input_ids"][1] != tiny_tokenizer.bos_token_id


def test_not_prefix_stable_template_is_refused_by_name(tiny_tokenizer, chat):
    template = resolve_template(tiny_tokenizer, NOT_PREFIX_STABLE)
    with pytest.raises(DataError) as info:
        encode_chat(chat, tiny_tokenizer, template)
    assert str(info.value).startswith("train.jsonl:1: spec.dataset.chatTemplate is not prefix-stable")


def test_template_refusing_a_conversation_names_line_and_template(tiny_tokenizer, chat):
    strict = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
              "{% endif %}{{ m['content'] }}{% endfor %}")
    template = resolve_template(tiny_tokenizer, strict)
    with pytest.raises(DataError) as info:
        encode(chat_record(chat, line=9), tiny_tokenizer, max_length=512, template=template)
    assert str(info.value) == ("train.jsonl:9: spec.dataset.chatTemplate cannot render this conversation: "
                               "no system role")


def test_template_resolution_order(tiny_tokenizer):
    assert resolve_template(tiny_tokenizer, "{{ messages }}") == ChatTemplate("{{ messages }}",
                                                                              "spec.dataset.chatTemplate")
    own = resolve_template(tiny_tokenizer)
    assert own.source == tiny_tokenizer.chat_template and "chat template of tokenizer" in own.name
    bare = copy.copy(tiny_tokenizer)
    bare.chat_template = None
    assert resolve_template(bare) == ChatTemplate(CHATML_TEMPLATE, "the built-in ChatML template")


def test_invalid_jinja_is_refused_up_front(tiny_tokenizer):
    with pytest.raises(ValueError, match="spec.dataset.chatTemplate is not valid Jinja"):
        resolve_template(tiny_tokenizer, "{% for m in messages %}")


def test_a_template_that_crashes_on_a_row_is_a_named_data_error_not_a_traceback(tiny_tokenizer, chat):
    """A template is a program: a TypeError inside it is the template's fault, reported at the row."""
    crashing = "{% for m in messages %}{{ m['content'] }}{% if m['role'] == 'system' %}{{ m['content'] + 1 }}{% endif %}{% endfor %}"
    template = resolve_template(tiny_tokenizer, crashing)
    with pytest.raises(DataError) as info:
        encode(chat_record(chat, line=4), tiny_tokenizer, max_length=512, template=template)
    assert str(info.value).startswith("train.jsonl:4: spec.dataset.chatTemplate fails on this conversation: TypeError")


def test_a_template_that_writes_no_content_is_refused_up_front(tiny_tokenizer):
    from finetune_trainer.data.chat import TemplateProblem

    with pytest.raises(TemplateProblem, match=r"spec.dataset.chatTemplate does not write the messages' content: .* "
                                              r"renders as 'x'"):
        resolve_template(tiny_tokenizer, "x")
