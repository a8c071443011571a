"""Turn normalized records into token ids and labels, apply `maxLength`, and count what happened.

The output is what the trainers consume, in trl's field names:

- SFT / CPT (`chat`, `prompt-completion`, `text`): `{"input_ids": [...], "labels": [...]}`, labels -100
  where no loss is taken. `labels[0]` is always -100: the first token has no context to be predicted from
  (causal LMs shift labels left by one, so it never was a target), and writing it down keeps "labels !=
  -100" equal to the number of tokens actually trained — the count tokens/s figures use — and lets packing
  glue documents together without changing any loss.
- DPO / ORPO (`preference`): `{"prompt_ids", "chosen_ids", "rejected_ids"}`, what trl's
  `DataCollatorForPreference` takes. As trl does, prompt and prompt+answer are tokenized whole and the
  answer begins where the two token lists diverge.

Masking per kind (objective `sft`): chat trains every assistant turn (content + end-of-turn token, see
chat.py); plain prompt-completion trains the completion and an appended EOS; text trains every token and
an appended EOS. Objective `cpt` trains every token of every kind.

BOS: we do what inference does. Chat text is exactly the template's output (the template writes BOS if the
model wants it). Plain text (text, plain prompt-completion, plain preference) gets a BOS only when the
tokenizer itself adds one to encoded text (Llama-style post-processors), and never a second one. A `bos_token`
that is merely *set* is not a reason: ChatML-style tokenizers (Qwen, our tiny model) define one and never use it.

Too long: `truncate` keeps the first maxLength tokens (a row left with no trained token is dropped, and
counted apart); `drop` leaves the row out. `DataReport` counts both so the run can say so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional

from .chat import ChatTemplate, label_by_spans, render, resolve_template, trained_spans
from .errors import DataError
from .records import Record

IGNORE = -100
TOO_LONG = "longer than maxLength"
NOTHING_TO_TRAIN = "no token to train on within maxLength"


@dataclass
class DataReport:
    """What encoding did to a dataset: the numbers a user needs to trust (or fix) their data.

    Attributes:
        max_length: the spec's maxLength.
        too_long: the spec's tooLong policy.
        read: examples read.
        kept: examples encoded and kept.
        truncated: kept examples that were cut to max_length.
        dropped: examples left out, by reason (TOO_LONG, NOTHING_TO_TRAIN).
        tokens: tokens in the kept examples (for preference data: prompt twice, plus both answers).
        trainable_tokens: tokens with a label (answers).
    """

    max_length: int
    too_long: str = "truncate"
    read: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    tokens: int = 0
    trainable_tokens: int = 0

    def drop(self, reason: str) -> None:
        """Count one dropped example under `reason`."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def as_dict(self) -> dict:
        """The counts as JSON-ready data (for manifest.json and the run summary), with `summary` added."""
        return {**asdict(self), "summary": self.summary()}

    def summary(self) -> str:
        """One line for logs and job status, e.g. '... 12 of 500 examples were longer than maxLength=256 and
        were truncated.'"""
        parts = [f"{self.read} examples read, {self.kept} kept ({self.tokens:,} tokens, "
                 f"{self.trainable_tokens:,} trained)."]
        if self.truncated:
            parts.append(f"{self.truncated} of {self.read} examples were longer than maxLength={self.max_length} "
                         "and were truncated.")
        if self.dropped.get(TOO_LONG):
            parts.append(f"{self.dropped[TOO_LONG]} of {self.read} examples were longer than "
                         f"maxLength={self.max_length} and were dropped (tooLong: drop).")
        if self.dropped.get(NOTHING_TO_TRAIN):
            parts.append(f"{self.dropped[NOTHING_TO_TRAIN]} of {self.read} examples were dropped because no answer "
                         f"token fits in their first {self.max_length} tokens; raise maxLength or shorten prompts.")
        return " ".join(parts)


def _bos_to_add(ids: list[int], tokenizer) -> list[int]:
    """`[bos]` when the tokenizer adds a BOS to encoded text itself and `ids` does not start with it, else []."""
    bos = tokenizer.bos_token_id
    if bos is None or (ids and ids[0] == bos):
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [bos] if probe and probe[0] == bos else []


def _eos_to_add(ids: list[int], tokenizer) -> list[int]:
    """`[eos]` unless the tokenizer has none or `ids` already ends with it."""
    eos = tokenizer.eos_token_id
    return [] if eos is None or (ids and ids[-1] == eos) else [eos]


def _plain_ids(text: str, tokenizer) -> list[int]:
    """Token ids of plain (non-chat) text, with a BOS exactly when the tokenizer adds one itself."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return _bos_to_add(ids, tokenizer) + ids


def _sft_tokens(record: Record, tokenizer, template: ChatTemplate) -> tuple[list[int], list[bool]]:
    """Token ids and trained flags of an SFT record, before length limits."""
    data = record.data
    if record.kind == "text":
        ids = _plain_ids(data["text"], tokenizer)
        ids += _eos_to_add(ids, tokenizer)
        return ids, [True] * len(ids)
    if record.conversational:
        messages, train_from = data.get("messages"), 0
        if messages is None:
            messages, train_from = data["prompt"] + data["completion"], len(data["prompt"])
        text, spans = trained_spans(messages, tokenizer, template, file=record.file, line=record.line,
                                    train_from=train_from)
        return label_by_spans(text, spans, tokenizer)
    # plain prompt-completion: tokenized as one text (as trl does), trained from the end of the prompt on.
    text = data["prompt"] + data["completion"]
    ids, trained = label_by_spans(text, [(len(data["prompt"]), len(text))], tokenizer)
    bos, eos = _bos_to_add(ids, tokenizer), _eos_to_add(ids, tokenizer)
    return bos + ids + eos, [False] * len(bos) + trained + [True] * len(eos)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _preference_ids(record: Record, tokenizer, template: ChatTemplate) -> tuple[list[int], list[int], list[int]]:
    """(prompt, prompt+chosen, prompt+rejected) token ids, as trl's DPO tokenizes them."""
    d = record.data
    if not record.conversational:
        whole = [_plain_ids(d["prompt"] + d[k], tokenizer) for k in ("chosen", "rejected")]
        whole = [w + _eos_to_add(w, tokenizer) for w in whole]
        return _plain_ids(d["prompt"], tokenizer), whole[0], whole[1]
    import jinja2

    try:
        prompt = render(d["prompt"], tokenizer, template, add_generation_prompt=True)
        whole = [render(d["prompt"] + d[k], tokenizer, template).rstrip() for k in ("chosen", "rejected")]
    except jinja2.TemplateError as e:
        raise DataError(record.file, record.line, f"{template.name} cannot render this example: {e}") from None
    if not all(w.startswith(prompt) for w in whole):
        raise DataError(record.file, record.line, f"{template.name} is not prefix-stable: the rendered prompt is not "
                                                  "a prefix of prompt + answer; set spec.dataset.chatTemplate")

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return ids(prompt), ids(whole[0]), ids(whole[1])


def _encode_preference(record, tokenizer, template, max_length, too_long, report) -> Optional[dict]:
    prompt, chosen, rejected = _preference_ids(record, tokenizer, template)
    n = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    out = {"prompt_ids": prompt[:n], "chosen_ids": chosen[n:], "rejected_ids": rejected[n:]}
    if n + max(len(out["chosen_ids"]), len(out["rejected_ids"])) > max_length:
        if too_long == "drop":
            report.drop(TOO_LONG)
            return None
        room = max_length - n
        if room <= 0:
            report.drop(NOTHING_TO_TRAIN)
            return None
        out["chosen_ids"], out["rejected_ids"] = out["chosen_ids"][:room], out["rejected_ids"][:room]
        report.truncated += 1
    report.kept += 1
    report.tokens += 2 * n + len(out["chosen_ids"]) + len(out["rejected_ids"])
    report.trainable_tokens += len(out["chosen_ids"]) + len(out["rejected_ids"])
    return out


def encode(record: Record, tokenizer, *, max_length: int, too_long: str = "truncate", objective: str = "sft",
           template: Optional[ChatTemplate] = None, report: Optional[DataReport] = None) -> Optional[dict]:
    """Encode one record for training.

    Args:
        record: a normalized record (records.py).
        tokenizer: a fast transformers tokenizer.
        max_length: the longest sequence kept, in tokens.
        too_long: `truncate` (keep the first max_length tokens) or `drop`.
        objective: `sft` (answers trained), `cpt` (every token trained), `dpo`/`orpo` (preference records).
        template: the chat template; default: `resolve_template(tokenizer)`.
        report: counts are added here, if given.

    Returns:
        `{"input_ids", "labels"}` (lists of ints, same length) for SFT/CPT, `{"prompt_ids", "chosen_ids",
        "rejected_ids"}` for preference records, or None when the record was dropped (see report).

    Raises:
        DataError: the chat template cannot render the record, or is not prefix-stable.
        ValueError: the record kind does not fit the objective.
    """
    template = template or resolve_template(tokenizer)
    report = report if report is not None else DataReport(max_length, too_long)
    if (record.kind == "preference") != (objective in ("dpo", "orpo")):
        raise ValueError(f"objective {objective!r} cannot train on {record.kind!r} records: dpo/orpo need "
                         "spec.dataset.format preference, and preference data needs dpo or orpo")
    report.read += 1
    if record.kind == "preference":
        return _encode_preference(record, tokenizer, template, max_length, too_long, report)
    ids, trained = _sft_tokens(record, tokenizer, template)
    if objective == "cpt":
        trained = [True] * len(ids)
    labels = [t if keep else IGNORE for t, keep in zip(ids, trained)]
    cut = len(ids) > max_length
    if cut and too_long == "drop":
        report.drop(TOO_LONG)
        return None
    ids, labels = ids[:max_length], labels[:max_length]
    labels[0] = IGNORE
    n_trained = sum(1 for x in labels if x != IGNORE)
    if n_trained == 0:
        report.drop(NOTHING_TO_TRAIN)
        return None
    report.truncated += cut
    report.kept += 1
    report.tokens += len(ids)
    report.trainable_tokens += n_trained
    return {"input_ids": ids, "labels": labels}


def encode_all(records: Iterable[Record], tokenizer, *, max_length: int, too_long: str = "truncate",
               objective: str = "sft", template: Optional[ChatTemplate] = None) -> tuple[list[dict], DataReport]:
    """Encode every record; see `encode`.

    Returns:
        (kept examples in input order, the DataReport).

    Raises:
        DataError, ValueError: as `encode`.
    """
    template = template or resolve_template(tokenizer)
    report = DataReport(max_length, too_long)
    out = []
    for record in records:
        ex = encode(record, tokenizer, max_length=max_length, too_long=too_long, objective=objective,
                    template=template, report=report)
        if ex is not None:
            out.append(ex)
    return out, report
