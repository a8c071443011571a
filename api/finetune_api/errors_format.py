"""pydantic's validation errors as lines a person can act on: `file:line: spec.field.path: what is wrong; what to do`.

Why a module of its own: pydantic reports Python-side locations (field names, union branch tags such as
`constrained-int`) and messages written for programmers ("Input should be a valid dictionary or instance of
ModelSpec"). A user wrote camelCase keys in a YAML file; every message here speaks in those terms: the wire path,
the line of the key, the allowed names for an unknown key (with "did you mean", also for a snake_case spelling
of a camelCase field), values cut to a readable length, and cross-field rules reported at the field that
breaks them rather than at `spec`.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Optional

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.alias_generators import to_camel

from .spec_yaml import line_of, shorten


def _root():
    from .job import FineTuneJob  # late: job.py imports the models that import nothing from here

    return FineTuneJob


def format_errors(err: ValidationError, source: str, node: Optional[yaml.Node]) -> list[str]:
    """One line per problem, union alternatives merged: `source:line: path: message`."""
    grouped: dict[tuple, list[dict]] = {}
    lines: list[str] = []
    for e in err.errors():
        path, tags = _clean_loc(e["loc"])
        if e["type"] == "cross_field":
            for dotted, msg in (e.get("ctx") or {}).get("violations", []):
                lines.append(_line(source, node, _split(dotted), msg))
            continue
        grouped.setdefault(tuple(path), []).append(e | {"_tags": tags})
    for path, errs in grouped.items():
        lines.append(_line(source, node, list(path), _message(path, errs, node)))
    return lines


def _line(source: str, node: Optional[yaml.Node], path: list, message: str) -> str:
    line = line_of(node, path) if node is not None else None
    where = f"{source}:{line}" if line else source
    return f"{where}: {_dotted(path) or '(top level)'}: {message}"


def _split(dotted: str) -> list:
    from .loading import split_path

    return split_path(dotted)


def _message(path: tuple, errs: list[dict], node: Optional[yaml.Node]) -> str:
    first = errs[0]
    kind = first["type"]
    if kind == "extra_forbidden":
        return _unknown_field(path, node)
    if kind == "missing":
        return "required field is missing"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        cls = _walk_model(path)
        fields = f" (its fields: {', '.join(_allowed_fields(path))})" if cls is not None else ""
        return f"should be a mapping of fields{fields}{_got(first.get('input'))}"
    if len(errs) > 1 and not isinstance(first.get("input"), str):  # a list or number: the 'auto' branch says nothing
        errs = [e for e in errs if e["type"] != "literal_error"] or errs
    msgs = [_reword(e) for e in errs]
    if len(errs) > 1:  # a union: 'auto' or a number
        return " or ".join(dict.fromkeys(_lower(m) for m in msgs)).capitalize() + _got(first.get("input"))
    return msgs[0] + _got(first.get("input"))


def _reword(e: dict) -> str:
    """pydantic's message with what strict typing means for a YAML author."""
    msg, got = e["msg"], e.get("input")
    if e["type"] in ("int_type", "float_type", "bool_type") and isinstance(got, str):
        return f"{msg}; write the value without quotes"
    if e["type"] == "int_type" and isinstance(got, bool):
        return f"{msg}, not true/false"
    if e["type"] == "string_pattern_mismatch":
        from .kube_types import PATTERN_WORDS

        pattern = (e.get("ctx") or {}).get("pattern", "")
        if pattern in PATTERN_WORDS:
            return f"should be {PATTERN_WORDS[pattern]}"
    if e["type"] == "string_type" and isinstance(got, (int, float, bool)):
        return f"{msg}; quote the value"
    return msg


def _got(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return f" (got {str(value).lower()})"
    return f" (got {shorten(repr(value))})"


def _unknown_field(path: tuple, node: Optional[yaml.Node]) -> str:
    key = str(path[-1])
    allowed = _allowed_fields(path[:-1])
    shown = shorten(key, 60)
    camel = to_camel(key)
    if camel != key and camel in allowed:
        siblings = _keys_at(node, list(path[:-1]))
        if camel in siblings:
            return (f"unknown field '{shown}': it is '{camel}' spelled in snake_case, and '{camel}' is given too; "
                    f"delete '{shown}'")
        return f"unknown field '{shown}'; did you mean '{camel}'? (fields are camelCase, as in Kubernetes)"
    by_lower = {a.lower(): a for a in allowed}
    close = [by_lower[key.lower()]] if key.lower() in by_lower else difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown field '{shown}'{hint} (allowed: {', '.join(allowed)})"


def _keys_at(node: Optional[yaml.Node], path: list) -> set:
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return set()
    return {getattr(k, "value", None) for k, _ in node.value} if isinstance(node, yaml.MappingNode) else set()


def _lower(msg: str) -> str:
    return msg[0].lower() + msg[1:] if msg else msg


def _walk_model(path: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model class at a wire path (aliases, list indices), or None."""
    cls: Any = _root()
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


def _is_mapping(annotation: Any) -> bool:
    """Whether a field is a free mapping (`dict[str, str]`): its keys are the user's, part of the path."""
    if typing.get_origin(annotation) is dict:
        return True
    return any(_is_mapping(a) for a in getattr(annotation, "__args__", ()) or ())


def _field_by_alias(cls: type[BaseModel], alias: str, wire_only: bool = False):
    """The field spelled `alias` on the wire (or, unless `wire_only`, by its Python name)."""
    for name, f in cls.model_fields.items():
        if (f.alias or name) == alias or (name == alias and not wire_only):
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
    cls: Any = _root()
    mapping = False
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        if mapping:  # a key of a free mapping (labels, nodeSelector): the user's own name
            path.append(part)
            mapping = False
            continue
        if cls is not None and isinstance(cls, type) and issubclass(cls, BaseModel):
            field = _field_by_alias(cls, part, wire_only=True)
            if field is not None:
                path.append(field.alias or part)
                cls = _model_in(field.annotation)
                mapping = cls is None and _is_mapping(field.annotation)
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
