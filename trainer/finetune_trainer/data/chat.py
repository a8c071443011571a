"""Render conversations with a chat template and find which characters the model is trained to produce.

Supervised fine-tuning on chat data trains only the assistant's words (and the end-of-turn token that tells
the model to stop); the system prompt, user turns and the template's headers are context, label -100.
Templates are Jinja programs, so there is no general way to ask one where a turn's content begins. We read the
spans off the *final* rendering of the whole conversation — the text the model is trained on:

    start of reply i = len(render(m[:i], add_generation_prompt=True))   (must be a prefix of the final text:
                                                                          the context before the reply)
    its content      = where a unique sentinel lands when reply i's content is replaced by it
    its end          = after the end-of-turn marker that follows the content in the final text

The end-of-turn marker is the one the template writes after the reply when it is the last turn (`<|eot_id|>`,
`<end_of_turn>`, `<|im_end|>`); a template whose earlier turns end with another tag — GPT-OSS's harmony format
ends the last reply with `<|return|>` and earlier ones with `<|end|>` — gets the tag it wrote in the final text.
So templates that render earlier turns differently once more turns follow (GPT-OSS; Qwen3, which gives only the
last reply an empty `<think>` block) train exactly what their final rendering shows, where a prefix rule would
have refused every multi-turn conversation. The trailing whitespace after the end-of-turn token is not
trained (at inference the model stops at the end token and never emits it). The full text is then tokenized
once, with character offsets, and a token is trained when it overlaps a span — so a token that merges the
prompt's last character with the answer's first is trained, the same place trl's token-divergence rule puts the
boundary — and the token ids are exactly those of tokenizing the whole conversation, what the model sees through
`apply_chat_template`. A template that changes the context *before* a reply once the reply follows, or does not
write a reply's content verbatim, is refused by name (docs/chat-templates.md lists what works).

The template is the spec's `chatTemplate`, else the tokenizer's own, else the built-in ChatML below. It is
checked once up front on a probe conversation (valid Jinja, and it writes the messages' content). We never add
a BOS token to chat text: if the model wants one, its template writes `{{ bos_token }}`, exactly as at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import jinja2

from ..errors import TrainerInputError
from .errors import DataError

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_PROBE = [{"role": "user", "content": "Is 7 odd?"}, {"role": "assistant", "content": "Yes, 7 is odd."}]


class TemplateProblem(TrainerInputError):
    """The chat template cannot be used at all (not Jinja, or it ignores the messages); names where it came from."""


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
    """Pick the chat template: the spec's, else the tokenizer's, else built-in ChatML; check it on a probe.

    Args:
        tokenizer: a transformers tokenizer.
        override: `spec.dataset.chatTemplate`, or None.

    Returns:
        The ChatTemplate.

    Raises:
        TemplateProblem: the chosen template is not valid Jinja, or renders a probe conversation without writing
            the messages' content (e.g. `chatTemplate: "x"`).
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
        text = render(_PROBE, tokenizer, template)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateProblem(f"{template.name} is not valid Jinja: {e} (line {e.lineno} of the template)") from None
    except Exception:  # noqa: BLE001 - a template may refuse this probe; rows are checked one by one later
        return template
    missing = [m["content"] for m in _PROBE if m["content"] not in text]
    if missing:
        shown = text if len(text) <= 60 else text[:59] + "…"
        raise TemplateProblem(
            f"{template.name} does not write the messages' content: a conversation of a user turn "
            f"{_PROBE[0]['content']!r} and a reply {_PROBE[1]['content']!r} renders as {shown!r}. A chat template "
            "loops over `messages` and writes each `message['content']` between the role markers; give the model's "
            "own template (its tokenizer_config.json has it) or leave chatTemplate unset (docs/chat-templates.md)")
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
    """Render a conversation and return the character spans of its trained assistant turns in the final text.

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
        DataError: the template refuses the conversation, changes the context before a reply once the reply
            follows, or does not write a reply's content verbatim.
    """
    def fail(why: str) -> DataError:
        return DataError(file, line, f"{template.name} {why}; set spec.dataset.chatTemplate to a template that "
                                     "does (docs/chat-templates.md)")

    try:
        full = render(messages, tokenizer, template)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant" or i < train_from:
                continue
            prefix = render(messages[:i], tokenizer, template, add_generation_prompt=True)
            if not full.startswith(prefix):
                raise fail(f"is not prefix-stable before reply {i}: it renders the first {i} turns (plus the "
                           "assistant header) differently once the reply follows, so the reply cannot be located")
            marked = messages[:i] + [dict(m, content=_SENTINEL)] + messages[i + 1:]
            at = render(marked, tokenizer, template).find(_SENTINEL)
            content = _written(full, at, m["content"])
            if at < len(prefix) or content is None:
                raise fail(f"does not write reply {i}'s content verbatim after the assistant header")
            end = at + len(content)
            if i == len(messages) - 1:
                end = len(full.rstrip())
            else:
                end = _end_of_turn(full, end, render(messages[: i + 1], tokenizer, template), content, len(prefix))
                if end is None:
                    raise fail(f"writes no end-of-turn marker after reply {i} that can be found in the final text")
            spans.append((len(prefix), end))
    except jinja2.TemplateError as e:
        raise DataError(file, line, f"{template.name} cannot render this conversation: {e}") from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a template is a program: a TypeError in it is the template's
        raise DataError(file, line, f"{template.name} fails on this conversation: {type(e).__name__}: {e}") from None
    return full, spans


_SENTINEL = "\u2e3ffinetune-reply\u2e3f"  # a string no template transforms and no conversation holds


def _written(full: str, at: int, content: str) -> Optional[str]:
    """The content as the template wrote it at `at` (as given, or trimmed like `| trim` does), or None."""
    if at < 0:
        return None
    for form in (content, content.strip()):
        if full.startswith(form, at):
            return form
    return None


def _end_of_turn(full: str, end: int, alone: str, content: str, start: int) -> Optional[int]:
    """Where reply content ending at `end` in `full` is closed by its end-of-turn marker.

    `alone` renders the conversation up to this reply, the reply last: the text after its content there is the
    template's end-of-turn marker. The final text has the same marker, or (harmony) another `<...>` tag.
    """
    at = alone.find(content, start)
    marker = alone[at + len(content):].rstrip() if at >= 0 else ""
    tail = full[end:]
    if not marker:
        return end
    if tail.startswith(marker):
        return end + len(marker)
    if marker.startswith("<") and marker.endswith(">") and tail.startswith("<") and ">" in tail:
        return end + tail.index(">") + 1
    return None


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
