"""Malformed dataset files, every format: what each holds, which line is at fault, and what the message must say.

A file is named by the format the spec says it is in; the line at fault is given by hand. Used by
tests/unit/trainer/data/test_bad_files.py (each must be refused naming the file and line, by the run's loader and
by `finetune validate`, with nothing written) and listed in docs/errors.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

U = {"role": "user", "content": "Is 2 even?"}
A = {"role": "assistant", "content": "even"}
S = {"role": "system", "content": "Be brief."}


def j(obj) -> str:
    return json.dumps(obj)


GOOD = {
    "alpaca": j({"instruction": "Is 2 even?", "output": "even"}),
    "messages": j({"messages": [U, A]}),
    "sharegpt": j({"conversations": [{"from": "human", "value": "Is 2 even?"}, {"from": "gpt", "value": "even"}]}),
    "prompt-completion": j({"prompt": "Is 2 even?", "completion": " even"}),
    "text": j({"text": "Two is even."}),
    "preference": j({"prompt": "Is 2 even?", "chosen": "even", "rejected": "odd"}),
}


@dataclass(frozen=True)
class BadFile:
    """One malformed data file.

    Attributes:
        format: spec.dataset.format.
        name: the file's name (its suffix matters: .json files may hold one JSON array).
        body: the file's text (or bytes).
        line: the line the message must name (None: the whole file).
        fragment: text the message must contain.
        what: a few words for docs/errors.md.
    """

    format: str
    name: str
    body: str | bytes
    line: Optional[int]
    fragment: str
    what: str


def bad(fmt: str, lines: list[str], line: int, fragment: str, what: str, name: str = "train.jsonl") -> BadFile:
    """A file of good lines of `fmt` with `lines` inserted so the first bad one is at `line`."""
    body = [GOOD[fmt]] * (line - 1) + lines + [GOOD[fmt]] * 2
    return BadFile(fmt, name, "\n".join(body) + "\n", line, fragment, what)


FILES: list[BadFile] = [
    # any JSONL
    bad("messages", ['{"messages": [}'], 3, "not valid JSON (Expecting value at column 15)", "a line that is not JSON"),
    bad("messages", ["{"], 2, "one example spread over several lines?", "pretty-printed JSON in a .jsonl file"),
    bad("alpaca", ['{"instruction": "a", "output": "b"} {"instruction": "c", "output": "d"}'], 4,
        "two JSON values on one line?", "two objects on one line"),
    bad("text", ['"just a string"'], 2, "expected a JSON object, got string", "a string instead of an object"),
    bad("text", ['[{"text": "a"}]'], 3, "expected a JSON object, got list (a JSON array file?", "an array on a line"),
    BadFile("alpaca", "train.jsonl", "[\n" + GOOD["alpaca"] + ",\n" + GOOD["alpaca"] + "\n]\n", 1,
            "(a JSON array file? name it .json", "a JSON array in a .jsonl file"),
    BadFile("messages", "train.jsonl", (GOOD["messages"] + "\n").encode() + b'{"messages": "\xff"}\n', 2,
            "not valid UTF-8 (byte 0xff", "bytes that are not UTF-8"),
    BadFile("messages", "train.jsonl", "\n\n   \n", None, "no examples: the file is empty", "only blank lines"),
    # alpaca
    bad("alpaca", [j({"instruction": "a"})], 5, "missing key 'output'", "no output"),
    bad("alpaca", [j({"instruction": "", "output": "b"})], 2, "'instruction' is empty", "an empty instruction"),
    bad("alpaca", [j({"instruction": "a", "output": 42})], 3, "'output' must be a string, got number",
        "a number as output"),
    bad("alpaca", [j({"instruction": "a", "input": ["x"], "output": "b"})], 2, "'input' must be a string, got list",
        "a list as input"),
    bad("alpaca", [j({"messages": [U, A]})], 2, "looks like 'messages' but spec.dataset.format is 'alpaca'",
        "a line of another format"),
    # messages
    bad("messages", [j({"messages": [U]})], 2, "has no assistant turn", "no assistant turn"),
    bad("messages", [j({"messages": [U, A, U]})], 3, "ends with a 'user' turn after the last assistant turn",
        "a user turn after the last reply"),
    bad("messages", [j({"messages": [{"role": "bot", "content": "x"}, A]})], 2, "messages[0].role is 'bot'; allowed:",
        "an unknown role"),
    bad("messages", [j({"messages": [{"role": "user"}, A]})], 2, "messages[0] is missing key 'content'",
        "a turn without content"),
    bad("messages", [j({"messages": []})], 2, "'messages' is an empty list", "an empty conversation"),
    bad("messages", [j({"messages": [U, {"role": "assistant", "content": "  "}]})], 4,
        "'messages[1].content' is empty", "a blank reply"),
    bad("messages", [j({"messages": ["hi", A]})], 2, "messages[0] must be an object with 'role' and 'content'",
        "a turn that is a string"),
    bad("messages", [j({"conversations": [{"from": "human", "value": "x"}]})], 2,
        "looks like 'sharegpt' but spec.dataset.format is 'messages'", "ShareGPT data under format messages"),
    # sharegpt
    bad("sharegpt", [j({"conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]})], 2,
        "conversations[0].from is 'robot'", "an unknown speaker"),
    bad("sharegpt", [j({"conversations": [{"from": "human", "value": "x"}]})], 3, "has no assistant turn",
        "no reply from gpt"),
    bad("sharegpt", [j({"conversations": "human: hi"})], 2, "'conversations' must be a list of messages, got string",
        "a transcript as one string"),
    # prompt-completion
    bad("prompt-completion", [j({"prompt": "a"})], 2, "missing key 'completion'", "no completion"),
    bad("prompt-completion", [j({"prompt": [U], "completion": "b"})], 3,
        "'prompt' and 'completion' must both be strings or both be lists of messages", "a chat prompt, a text answer"),
    bad("prompt-completion", [j({"prompt": [U], "completion": [U]})], 2, "'completion' has no assistant turn",
        "a completion with no reply"),
    # text
    bad("text", [j({"text": ""})], 2, "'text' is empty", "an empty text"),
    bad("text", [j({"content": "words"})], 2, "missing key 'text'", "another key"),
    bad("text", [j({"text": None})], 3, "'text' must be a string, got null", "a null text"),
    # preference
    bad("preference", [j({"prompt": "a", "chosen": "b"})], 2, "missing key 'rejected'", "no rejected answer"),
    bad("preference", [j({"prompt": "a", "chosen": [A], "rejected": "c"})], 2, "must all be strings or all be lists",
        "mixed strings and messages"),
    bad("preference", [j({"prompt": "a", "chosen": "b", "rejected": ""})], 3, "'rejected' is empty",
        "an empty rejected answer"),
    # a .json file holding one JSON array (the Alpaca release's layout)
    BadFile("alpaca", "data.json", "[\n  " + GOOD["alpaca"] + ",\n  {\"instruction\": \"x\"}\n]\n", 3,
            "missing key 'output'", "a JSON array with an incomplete example"),
    BadFile("alpaca", "data.json", "[\n  " + GOOD["alpaca"] + ",\n  " + GOOD["alpaca"] + ",\n]\n", 4,
            "JSON allows no trailing comma", "a JSON array with a trailing comma"),
    BadFile("alpaca", "data.json", "[\n  " + GOOD["alpaca"] + "\n  " + GOOD["alpaca"] + "\n]\n", 3,
            "expected ',' or ']' after an example", "a JSON array missing a comma"),
    BadFile("alpaca", "data.json", "[\n  {\"instruction\": \"a\",\n   \"output\": \"b\"\n", 2,
            "not valid JSON", "a JSON array cut short"),
    BadFile("alpaca", "data.json", "[]\n", None, "no examples: the JSON array is empty", "an empty JSON array"),
]
