"""Render conversations with a chat template and find which characters the model is trained to produce.

Supervised fine-tuning on chat data trains only the assistant's words (and the end-of-turn token that tells
the model to stop); the system prompt, user turns and the template's headers are context, label -100.
Templates are Jinja programs, so there is no general way to ask one where a turn's content begins. We use
the one property every usable template has — rendering is *prefix-stable*, i.e. rendering the first i turns
is a prefix of rendering the first i+1 — and read the spans off rendered prefixes:

    trained span of assistant turn i = [len(render(m[:i], add_generation_prompt=True)),
                                        len(render(m[:i+1]).rstrip()))

The trailing whitespace after the end-of-turn token is not trained (at inference the model stops at the
end token and never emits it). The full text is then tokenized once, with character offsets, and a token
is trained when it overlaps a span — so a token that merges the prompt's last character with the answer's
first is trained, the same place trl's token-divergence rule puts the boundary — and the token ids are
exactly those of tokenizing the whole conversation, what the model sees through `apply_chat_template`.
A template that rewrites earlier turns (e.g. one that drops reasoning from all but the last reply) is not
prefix-stable; we refuse it, naming the template, instead of training on misplaced spans.

The template is the spec's `chatTemplate`, else the tokenizer's own, else the built-in ChatML below. We
never add a BOS token to chat text: if the model wants one, its template writes `{{ bos_token }}`, exactly
as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jinja2

from .errors import DataError

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PROBE = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]


@dataclass(frozen=True)
class ChatTemplate:
    """A Jinja chat template and the name it goes by in error messages.

    Attributes:
        source: the Jinja text.
        name: where it came from: `spec.dataset.chatTemplate`, `the chat template of tokenizer '<path>'`
            or `the built-in ChatML template`.
    """

    source: str
    name: str


def resolve_template(tokenizer, override: Optional[str] = None) -> ChatTemplate:
    """Pick the chat template: the spec's, else the tokenizer's, else built-in ChatML.

    Args:
        tokenizer: a transformers tokenizer.
        override: `spec.dataset.chatTemplate`, or None.

    Returns:
        The ChatTemplate.

    Raises:
        ValueError: the chosen template is not valid Jinja.
    """
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, dict):  # several named templates: the unnamed one is "default"
        own = own.get("default")
    if override:
        template = ChatTemplate(override, "spec.dataset.chatTemplate")
    elif own:
        template = ChatTemplate(own, f"the chat template of tokenizer '{getattr(tokenizer, 'name_or_path', '?')}'")
    else:
        template = ChatTemplate(CHATML_TEMPLATE, "the built-in ChatML template")
    try:
        render(_PROBE, tokenizer, template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"{template.name} is not valid Jinja: {e} (line {e.lineno} of the template)") from e
    except Exception:  # noqa: BLE001 - a template may refuse this probe; rows are checked one by one later
        pass
    return template


def render(messages: list, tokenizer, template: ChatTemplate, *, add_generation_prompt: bool = False) -> str:
    """Render messages to text with `template`, through the tokenizer (so `bos_token` etc. are defined).

    Args:
        messages: `{"role", "content"}` dicts.
        tokenizer: supplies the special tokens the template may use.
        template: the template.
        add_generation_prompt: append the header that opens an assistant turn.

    Returns:
        The rendered text.

    Raises:
        jinja2.TemplateError: the template refused the conversation (callers turn it into a DataError).
    """
    return tokenizer.apply_chat_template(
        messages, chat_template=template.source, add_generation_prompt=add_generation_prompt, tokenize=False
    )


def trained_spans(messages: list, tokenizer, template: ChatTemplate, *, file: str, line: Optional[int],
                  train_from: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """Render a conversation and return the character spans of its trained assistant turns.

    Args:
        messages: the conversation; it ends with an assistant turn (records.py checks).
        tokenizer: supplies the special tokens the template may use.
        template: the chat template.
        file: where the record came from, for errors.
        line: its line (or hub row), for errors.
        train_from: only assistant turns at this index or later are trained (a conversational
            prompt-completion record trains its completion only).

    Returns:
        (full text, [(start, end), ...]) with end exclusive, in order.

    Raises:
        DataError: the template refuses the conversation, or is not prefix-stable.
    """
    try:
        full = render(messages, tokenizer, template)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or i < train_from:
                continue
            prefix = render(messages[:i], tokenizer, template, add_generation_prompt=True)
            upto = render(messages[: i + 1], tokenizer, template)
            if not (upto.startswith(prefix) and full.startswith(upto)):
                raise DataError(file, line, f"{template.name} is not prefix-stable: rendering the first {i} turns "
                                            f"(plus the assistant header) is not a prefix of rendering the first "
                                            f"{i + 1}, so the trained part of turn {i} cannot be located. Set "
                                            "spec.dataset.chatTemplate to a template that renders earlier turns "
                                            "unchanged")
            spans.append((len(prefix), len(upto.rstrip())))
    except jinja2.TemplateError as e:
        raise DataError(file, line, f"{template.name} cannot render this conversation: {e}") from None
    return full, spans


def label_by_spans(text: str, spans: list[tuple[int, int]], tokenizer) -> tuple[list[int], list[bool]]:
    """Tokenize `text` once and mark the tokens that overlap one of `spans`.

    Args:
        text: the rendered text (special tokens written out, as templates do).
        spans: character spans to train, end exclusive.
        tokenizer: a fast tokenizer (character offsets are needed).

    Returns:
        (token ids, trained flag per token). No special tokens are added: the text already has them.

    Raises:
        ValueError: the tokenizer is not a fast one and gives no offsets.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("masking prompts needs a fast (Rust) tokenizer for character offsets; load the tokenizer "
                         "with use_fast=True or convert it")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    trained, k = [], 0
    for start, end in enc["offset_mapping"]:
        while k < len(spans) and start >= spans[k][1]:
            k += 1
        trained.append(k < len(spans) and max(end, start + 1) > spans[k][0])
    return list(enc["input_ids"]), trained
