"""Reading the data files (JSONL, a JSON array in a .json file, a folder of them, or a hub split) into Records.

Why apart from records.py: records.py says what one example must look like; this module says how examples are
found and read, and reports a bad line by file and line number. Blank lines are skipped; a UTF-8 byte-order
mark at the start of a file is accepted; a `.json` file holding one JSON array of examples (the layout of the
Alpaca release and many tutorials) is read too, each example named by the line it starts on (json_array.py). `finetune run` stops at the first bad line;
`finetune validate` passes a list and gets every bad line (the same messages), so a user fixes a file in one go.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterable, Optional

from .errors import DataError
from .records import Record, normalize


def jsonl_files(path: Path) -> list[Path]:
    """The files a spec path stands for: the file itself, or a directory's *.jsonl files in sorted order.

    Raises:
        DataError: the path does not exist, or the directory holds no *.jsonl file.
    """
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json") and p.is_file())
            if not files:
                raise DataError(str(path), None, "directory holds no *.jsonl or *.json files")
            return files
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such file"
            raise DataError(str(path), None, f"{what} (paths are relative to the job file's directory)")
    except OSError as e:  # a name too long, a component that is a file, no permission
        raise DataError(str(path), None, f"cannot read: {e.strerror or e}") from None
    return [path]


def read_jsonl(path: Path, fmt: str, problems: Optional[list] = None) -> list[Record]:
    """Every example of one JSONL file, normalized.

    Args:
        path: the file.
        fmt: the spec's format.
        problems: when given, a bad line is appended here and reading goes on (`finetune validate` lists every
            bad line); when None the first one is raised (`finetune run`).

    Returns:
        One Record per non-blank line, in file order.

    Raises:
        DataError: a line is not UTF-8, not JSON, or not a valid example; or the file has no examples.
    """
    file, records = str(path), []
    if path.suffix == ".json" and _starts_with_bracket(path):
        from .json_array import read_json_array

        try:
            for obj, n in read_json_array(path):
                try:
                    records.append(normalize(obj, fmt, file, n))
                except DataError as e:
                    _keep(e, problems)
        except DataError as e:  # the array itself is malformed: nothing after it can be read
            _keep(e, problems)
            return records
        if not records and not problems:
            raise DataError(file, None, "no examples: the JSON array is empty")
        return records
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(file, None, f"cannot read: {e.strerror or e}") from None
    with f:
        for n, raw in enumerate(f, 1):
            try:
                record = _line(raw, n, fmt, file)
            except DataError as e:
                _keep(e, problems)
                continue
            if record is not None:
                records.append(record)
    if not records and not problems:
        raise DataError(file, None, "no examples: the file is empty or holds only blank lines")
    return records


def _line(raw: bytes, n: int, fmt: str, file: str) -> Optional[Record]:
    """One JSONL line as a Record (None for a blank line)."""
    if n == 1 and raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(file, n, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                                 "line); re-save the file as UTF-8") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(file, n, f"not valid JSON ({e.msg} at column {e.colno}); each line must hold "
                                 f"one complete JSON object{_layout_hint(text, e, n)}") from None
    return normalize(obj, fmt, file, n)


def _keep(e: DataError, problems: Optional[list]) -> None:
    """Raise `e`, or (collecting) record it and go on."""
    if problems is None:
        raise e
    problems.append(e)


def _starts_with_bracket(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
    except OSError:
        return False
    return head.startswith(b"[")


def _layout_hint(text: str, e: json.JSONDecodeError, n: int) -> str:
    """Why a JSONL line does not parse, when the file's layout is the likely cause."""
    s = text.strip()
    if s == "[" or (n == 1 and s.startswith("[")):
        return " (a JSON array file? name it .json to read it as one array, or write one object per line)"
    if s in ("{", "}", "},", "],", "]") or (s.startswith("{") and e.msg.startswith("Expecting") and e.pos >= len(s)):
        return " (one example spread over several lines? JSONL needs each example on a single line)"
    if e.msg == "Extra data":
        return " (two JSON values on one line? put each example on its own line)"
    return ""


def read_paths(paths: Iterable[str], fmt: str, base_dir: Path, problems: Optional[list] = None) -> list[Record]:
    """Every example of the spec's `paths` (files or directories), relative paths taken from `base_dir`.

    Args:
        problems: collect bad lines and files here instead of raising the first (see read_jsonl).

    Raises:
        DataError: as `jsonl_files` and `read_jsonl`.
    """
    records: list[Record] = []
    for p in paths:
        try:
            try:
                path = Path(p).expanduser()
            except RuntimeError:  # '~nosuchuser/...'
                raise DataError(p, None, "names the home of a user this machine does not have; write the path in "
                                         "full") from None
            files = jsonl_files(path if path.is_absolute() else Path(base_dir) / path)
        except DataError as e:
            _keep(e, problems)
            continue
        for file in files:
            records.extend(read_jsonl(file, fmt, problems))
    return records


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:300]


def read_hub(hub_id: str, split: str, fmt: str) -> list[Record]:
    """Every row of a hub dataset split, normalized; errors name `hub:<id>` and the 0-based row index.

    Args:
        hub_id: the dataset id on the Hugging Face hub (or a local dataset script/dir `load_dataset` accepts).
        split: the split to read.
        fmt: the spec's format.

    Returns:
        One Record per row.

    Raises:
        DataError: the dataset or split cannot be found, it has no rows, or a row is not a valid example.
    """
    import datasets  # heavy import, only for hub data

    file = f"hub:{hub_id}"
    try:
        ds = datasets.load_dataset(hub_id, split=split)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(file, None, f"cannot load split {split!r}: {_first_line(e)}") from None
    except OSError as e:  # ConnectionError and friends: no network, the hub down, a proxy refusing
        raise DataError(file, None, f"cannot reach the Hugging Face hub to download it ({_first_line(e)}); run where "
                                    "the hub is reachable, or save the data as JSONL and use spec.dataset.paths") \
            from None
    except Exception as e:  # noqa: BLE001 - the datasets library raises many kinds; each is the user's data
        raise DataError(file, None, f"cannot load split {split!r}: {type(e).__name__}: {_first_line(e)}") from None
    records = [normalize(row, fmt, file, i) for i, row in enumerate(ds)]
    if not records:
        raise DataError(file, None, f"split {split!r} has no rows")
    return records
