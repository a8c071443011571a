"""Reading a FineTuneJob from YAML, with errors that name the file, the line and the field path.

A user's first contact with the project is often a typo. pydantic knows *what* is wrong
(`spec.training.learningRate`: greater than 0); the YAML node tree knows *where* (job.yaml line 14). This
module joins the two, and adds what pydantic's messages lack: the allowed fields for an unknown key, with a
"did you mean" when one is close.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError

from .contract import UserError
from .job import FineTuneJob


class SpecError(UserError):
    """A FineTuneJob that cannot be used, with one line per problem: `file:line: field.path: message`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid FineTuneJob:\n  " + "\n  ".join(problems))


def load_job(path: str | Path) -> FineTuneJob:
    """Parse and validate the FineTuneJob in the YAML file at `path`.

    Raises:
        SpecError: the file is missing, is not YAML, or does not validate; each line names the place.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{p}: no such file"]) from None
    except UnicodeDecodeError as e:
        raise SpecError([f"{p}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    return load_job_text(text, source=str(p))


def load_job_text(text: str, source: str = "<spec>") -> FineTuneJob:
    """Parse and validate FineTuneJob YAML (or JSON) text; `source` names it in errors."""
    try:
        docs = [d for d in yaml.compose_all(text)]
        data = yaml.safe_load(text) if len(docs) == 1 else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise SpecError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    if len(docs) != 1:
        raise SpecError([f"{source}: expected exactly one YAML document, found {len(docs)}"])
    if not isinstance(data, dict):
        raise SpecError([f"{source}:1: expected a mapping (apiVersion, kind, metadata, spec)"])
    return validate_job(data, source=source, node=docs[0])


def validate_job(data: dict, source: str = "<spec>", node: Optional[yaml.Node] = None) -> FineTuneJob:
    """Validate a FineTuneJob given as a dict; errors name `source` (and lines when `node` is given)."""
    try:
        return FineTuneJob.model_validate(data)
    except ValidationError as e:
        raise SpecError(format_errors(e, source, node)) from None


def format_errors(err: ValidationError, source: str, node: Optional[yaml.Node]) -> list[str]:
    """One line per problem, union alternatives merged: `source:line: path: message`."""
    grouped: dict[tuple, list[dict]] = {}
    for e in err.errors():
        path, tags = _clean_loc(e["loc"])
        grouped.setdefault(tuple(path), []).append(e | {"_tags": tags})
    lines = []
    for path, errs in grouped.items():
        dotted = _dotted(path)
        line = _line_of(node, list(path)) if node is not None else None
        where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {dotted or '(top level)'}: {_message(path, errs)}")
    return lines


def _message(path: tuple, errs: list[dict]) -> str:
    first = errs[0]
    if first["type"] == "extra_forbidden":
        allowed = _allowed_fields(path[:-1])
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return f"unknown field '{path[-1]}'{hint} (allowed: {', '.join(allowed)})"
    if first["type"] == "missing":
        return "required field is missing"
    if first["type"] == "cross_field":
        return first["msg"]
    got = first.get("input")
    got_s = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
    if len(errs) > 1:  # a union: 'auto' or a number
        return " or ".join(dict.fromkeys(_lower(e["msg"]) for e in errs)).capitalize() + got_s
    return first["msg"] + got_s


def _lower(msg: str) -> str:
    return msg[0].lower() + msg[1:] if msg else msg


def _walk_model(path: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class at a wire path (aliases, list indices), or None."""
    cls: Any = FineTuneJob
    for part in path:
        if isinstance(part, int):
            continue
        field = _field_by_alias(cls, part)
        if field is None:
            return None
        cls = _model_in(field.annotation)
        if cls is None:
            return None
    return cls


def _model_in(annotation: Any) -> Optional[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _field_by_alias(cls: type[BaseModel], alias: str):
    for name, f in cls.model_fields.items():
        if (f.alias or name) == alias or name == alias:
            return f
    return None


def _allowed_fields(path: tuple) -> list[str]:
    cls = _walk_model(path)
    if cls is None:
        return []
    return [f.alias or n for n, f in cls.model_fields.items()]


def _clean_loc(loc: tuple) -> tuple[list, list]:
    """Split pydantic's loc into the wire path and the union-branch tags it interleaves."""
    path: list = []
    tags: list = []
    cls: Any = FineTuneJob
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        if cls is not None and isinstance(cls, type) and issubclass(cls, BaseModel):
            field = _field_by_alias(cls, part)
            if field is not None:
                path.append(field.alias or part)
                cls = _model_in(field.annotation)
                continue
            path.append(part)  # an unknown key: keep it, it is what the user wrote
            cls = None
            continue
        tags.append(part)  # below a scalar field: a union branch such as 'constrained-int'
    return path, tags


def _dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _line_of(node: yaml.Node, path: list) -> Optional[int]:
    """1-based line of the deepest YAML node on `path` (the key itself for mapping entries)."""
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line
