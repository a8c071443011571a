"""Read JSONL files (or a hub dataset) and turn every line into one normalized record, or say which line is bad.

Users bring six shapes of data (see `finetune_api.dataset`). Everything after this module — chat
rendering, masking, packing — sees only four normalized kinds, the same four dataset types trl knows,
with trl's field names, so a record can be handed to trl as it is:

- `chat`: `{"messages": [{"role", "content"}, ...]}` — from `messages`, `sharegpt` (from/value renamed,
  human -> user, gpt -> assistant) and `alpaca` (instruction + input as the user turn, output as the reply;
  rendered with the chat template, as instruct models expect).
- `text`: `{"text": str}` — continued pre-training.
- `prompt-completion`: `{"prompt", "completion"}`, both strings or both lists of messages.
- `preference`: `{"prompt", "chosen", "rejected"}`, all strings or all lists of messages.

Validation happens here, once, at the boundary: every malformed line raises `DataError` naming the file
and line (files.py reads the files and passes each line here). A conversation must end with an assistant turn: turns after the last reply would never be trained,
which almost always means a truncated export, so we refuse it rather than train on it silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .errors import DataError

KIND_OF_FORMAT = {
    "alpaca": "chat", "messages": "chat", "sharegpt": "chat",
    "prompt-completion": "prompt-completion", "text": "text", "preference": "preference",
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
# Keys that identify each format; used to tell a user their line is in another format than the spec says.
SIGNATURES = (
    ("messages", {"messages"}), ("sharegpt", {"conversations"}), ("preference", {"chosen", "rejected"}),
    ("prompt-completion", {"prompt", "completion"}), ("alpaca", {"instruction", "output"}), ("text", {"text"}),
)


@dataclass(frozen=True)
class Record:
    """One example in normalized form.

    Attributes:
        kind: `chat`, `text`, `prompt-completion` or `preference`.
        data: the fields of that kind (trl's names): `messages`; `text`; `prompt` + `completion`;
            `prompt` + `chosen` + `rejected`. Messages are `{"role", "content"}` dicts, roles in ROLES.
        file: where it came from (a path, or `hub:<id>`), for error messages.
        line: 1-based line in the file (0-based row index for hub data).
    """

    kind: str
    data: dict
    file: str
    line: Optional[int]

    @property
    def conversational(self) -> bool:
        """True for chat records and for prompt-completion/preference records made of messages."""
        return self.kind == "chat" or isinstance(self.data.get("prompt"), list)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)


class _Row:
    """One parsed line being checked against its format; every failure names the file and line."""

    def __init__(self, obj: dict, fmt: str, file: str, line: Optional[int]) -> None:
        self.obj, self.fmt, self.file, self.line = obj, fmt, file, line

    def fail(self, message: str) -> DataError:
        return DataError(self.file, self.line, message)

    def require(self, key: str, needs: str) -> Any:
        if key in self.obj:
            return self.obj[key]
        keys = set(self.obj)
        for other, signature in SIGNATURES:
            if other != self.fmt and signature <= keys:
                where = f"line {self.line}" if not self.file.startswith("hub:") else f"row {self.line}"
                raise self.fail(f"{where} looks like '{other}' but spec.dataset.format is '{self.fmt}'; "
                                f"set spec.dataset.format to '{other}' or convert the data")
        raise self.fail(f"missing key '{key}' ({self.fmt} examples need {needs}; this one has "
                        f"{', '.join(repr(k) for k in sorted(keys)) or 'no keys'})")

    def text(self, key: str, value: Any, *, allow_empty: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(f"'{key}' must be a string, got {_json_type(value)}")
        if not allow_empty and not value.strip():
            raise self.fail(f"'{key}' is empty; every example needs text there (fill it in or remove the line)")
        return value

    def messages(self, key: str, value: Any, *, sharegpt: bool = False, reply: bool = True) -> list:
        """Check a list of turns; `reply` (all but prompts) requires an assistant turn, and one at the end."""
        if not isinstance(value, list):
            raise self.fail(f"'{key}' must be a list of messages, got {_json_type(value)}")
        if not value:
            raise self.fail(f"'{key}' is an empty list; it needs at least one message")
        role_key, text_key = ("from", "value") if sharegpt else ("role", "content")
        allowed = SHAREGPT_ROLES if sharegpt else {r: r for r in ROLES}
        out = []
        for i, m in enumerate(value):
            where = f"{key}[{i}]"
            if not isinstance(m, dict):
                raise self.fail(f"{where} must be an object with '{role_key}' and '{text_key}', got {_json_type(m)}")
            for k in (role_key, text_key):
                if k not in m:
                    raise self.fail(f"{where} is missing key '{k}'")
            role = m[role_key]
            if not isinstance(role, str) or role not in allowed:
                raise self.fail(f"{where}.{role_key} is {role!r}; allowed: {', '.join(allowed)}")
            self.text(f"{where}.{text_key}", m[text_key])
            out.append({"role": allowed[role], "content": m[text_key]})
        if not reply:
            return out
        if "assistant" not in [m["role"] for m in out]:
            raise self.fail(f"'{key}' has no assistant turn, so there is nothing to train on")
        if out[-1]["role"] != "assistant":
            raise self.fail(f"'{key}' ends with a '{out[-1]['role']}' turn after the last assistant turn; turns "
                            "after the last reply are never trained — remove them or add the assistant's reply")
        return out


def normalize(obj: Any, fmt: str, file: str, line: Optional[int]) -> Record:
    """Check one parsed line against its format and return it as a normalized record.

    Args:
        obj: the parsed JSON value of the line (or a hub dataset row).
        fmt: the spec's format, one of KIND_OF_FORMAT.
        file: the path (or `hub:<id>`) for error messages.
        line: the line number (or row index) for error messages.

    Returns:
        The Record.

    Raises:
        DataError: the line is not an object, lacks a key, has a wrong type, empty text, an unknown role,
            no assistant turn, trailing turns after the last reply, or looks like another format.
    """
    if not isinstance(obj, dict):
        hint = " (a JSON array file? write one object per line: JSONL)" if isinstance(obj, list) else ""
        raise DataError(file, line, f"expected a JSON object, got {_json_type(obj)}{hint}")
    row = _Row(obj, fmt, file, line)
    if fmt == "alpaca":
        instruction = row.text("instruction", row.require("instruction", "'instruction' and 'output'"))
        output = row.text("output", row.require("output", "'instruction' and 'output'"))
        extra = obj.get("input")
        user = instruction
        if extra is not None and row.text("input", extra, allow_empty=True).strip():
            user = f"{instruction}\n\n{extra}"
        return Record("chat", {"messages": [{"role": "user", "content": user},
                                            {"role": "assistant", "content": output}]}, file, line)
    if fmt in ("messages", "sharegpt"):
        key = "messages" if fmt == "messages" else "conversations"
        msgs = row.messages(key, row.require(key, f"'{key}'"), sharegpt=fmt == "sharegpt")
        return Record("chat", {"messages": msgs}, file, line)
    if fmt == "text":
        return Record("text", {"text": row.text("text", row.require("text", "'text'"))}, file, line)
    if fmt == "prompt-completion":
        needs = "'prompt' and 'completion'"
        prompt, completion = row.require("prompt", needs), row.require("completion", needs)
        if isinstance(prompt, list) or isinstance(completion, list):
            if not (isinstance(prompt, list) and isinstance(completion, list)):
                raise row.fail("'prompt' and 'completion' must both be strings or both be lists of messages")
            data = {"prompt": row.messages("prompt", prompt, reply=False),
                    "completion": row.messages("completion", completion)}
        else:
            data = {"prompt": row.text("prompt", prompt), "completion": row.text("completion", completion)}
        return Record("prompt-completion", data, file, line)
    if fmt == "preference":
        needs = "'prompt', 'chosen' and 'rejected'"
        values = {k: row.require(k, needs) for k in ("prompt", "chosen", "rejected")}
        if any(isinstance(v, list) for v in values.values()):
            if not all(isinstance(v, list) for v in values.values()):
                raise row.fail("'prompt', 'chosen' and 'rejected' must all be strings or all be lists of messages")
            data = {"prompt": row.messages("prompt", values["prompt"], reply=False),
                    "chosen": row.messages("chosen", values["chosen"]),
                    "rejected": row.messages("rejected", values["rejected"])}
        else:
            data = {k: row.text(k, v) for k, v in values.items()}
        return Record("preference", data, file, line)
    raise ValueError(f"unknown dataset format {fmt!r}; expected one of {', '.join(KIND_OF_FORMAT)}")
