"""Reading a `.json` file that holds one JSON array of examples, each named by the line it starts on.

Why: the Alpaca release (`alpaca_data.json`) and many fine-tuning tutorials ship their data as one JSON array,
pretty-printed over many lines. Read as JSONL, such a file failed on its first line with a JSON error that said
nothing about the layout. `json.load` would read it, but a bad example deep inside would then be reported by
character offset only; here each example is decoded in place (`raw_decode`), so every message names the line
(and column) where the problem is, the way a JSONL error does.
"""

from __future__ import annotations

import bisect
import codecs
import json
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError

_WS = " \t\r\n"


def _skip(text: str, i: int) -> int:
    while i < len(text) and text[i] in _WS:
        i += 1
    return i


def read_json_array(path: Path) -> Iterator[tuple[Any, int]]:
    """Yield (example, 1-based line where it starts) for each element of the array in `path`.

    Raises:
        DataError: not UTF-8, not a JSON array, a malformed element (line and column named), or text after it.
    """
    file = str(path)
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise DataError(file, line, f"not valid UTF-8 (byte 0x{raw[e.start]:02x}); re-save the file as UTF-8") from None
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def where(pos: int) -> tuple[int, int]:
        line = bisect.bisect_right(starts, pos)
        return line, pos - starts[line - 1] + 1

    decoder = json.JSONDecoder()
    i = _skip(text, 0)
    if text[i:i + 1] != "[":
        raise DataError(file, where(i)[0], "expected a JSON array of examples")
    i = _skip(text, i + 1)
    if text[i:i + 1] == "]":
        return
    while True:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            if e.pos >= len(text.rstrip()):  # cut short: the example that never closes is the one to look at
                raise DataError(file, where(i)[0], f"not valid JSON: the example that starts here is never closed "
                                                   f"(the file ends at line {where(len(text) - 1)[0]})") from None
            line, col = where(e.pos)
            raise DataError(file, line, f"not valid JSON ({e.msg} at column {col}) in the array's example that "
                                        f"starts at line {where(i)[0]}") from None
        yield obj, where(i)[0]
        i = _skip(text, end)
        c = text[i:i + 1]
        if c == ",":
            i = _skip(text, i + 1)
            if text[i:i + 1] == "]":
                line, col = where(i)
                raise DataError(file, line, f"a ',' before the closing ']' at column {col}: JSON allows no trailing "
                                            "comma; delete it")
            continue
        if c == "]":
            rest = _skip(text, i + 1)
            if rest < len(text):
                raise DataError(file, where(rest)[0], "text after the end of the JSON array; a .json file holds one "
                                                      "array (or use JSONL: one example per line)")
            return
        line, col = where(i)
        found = "the end of the file" if not c else repr(c)
        raise DataError(file, line, f"expected ',' or ']' after an example, found {found} at column {col}")
