"""`finetune explain [field]`: the API reference from the same schema the CRD carries.

Like `kubectl explain ftj.spec.method`, but it works without a cluster, and it shows defaults and
allowed values, which the CRD (deliberately default-free: defaults live in the pydantic models) cannot.
"""

from __future__ import annotations

import textwrap
import typing
from typing import Any, Optional

from pydantic import BaseModel

from .job import FineTuneJob
from .errors_format import _field_by_alias, _model_in


class UnknownField(KeyError):
    """`finetune explain` was asked about a path that is not in the spec."""


def _describe_type(annotation: Any) -> str:
    """A type as a reader wants it: `Optional[int>0]`, `dict[str, str]`, `Literal['a', 'b']` (constraints are in the
    description and the CRD, not repeated here)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        base, meta = args[0], args[1:]
        bounds = {type(m).__name__: m for m in meta}
        if base is int and "Gt" in bounds and bounds["Gt"].gt == 0:
            return "int>0"
        if base is int and "Ge" in bounds and bounds["Ge"].ge == 0:
            return "int>=0"
        return _describe_type(base)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        text = ", ".join(_describe_type(a) for a in inner)
        if len(inner) < len(args):
            return f"Optional[{text}]" if len(inner) == 1 else f"Optional[Union[{text}]]"
        return f"Union[{text}]"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_describe_type(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _lookup(path: str):
    parts = [p for p in path.split(".") if p]
    if parts and parts[0].lower() in ("finetunejob", "ftj"):
        parts = parts[1:]
    cls: Optional[type[BaseModel]] = FineTuneJob
    field = None
    walked = []
    for part in parts:
        if cls is None:
            raise UnknownField(f"{'.'.join(walked)} has no fields (it is a {_describe_type(field.annotation)})")
        field = _field_by_alias(cls, part)
        if field is None:
            allowed = ", ".join(f.alias or n for n, f in cls.model_fields.items())
            raise UnknownField(f"no field '{part}' in {'.'.join(walked) or 'FineTuneJob'} (fields: {allowed})")
        walked.append(part)
        cls = _model_in(field.annotation)
    return walked, field, cls


def explain(path: str = "") -> str:
    """Text describing the field at dotted `path` (e.g. `spec.method.lora`) and its sub-fields.

    Raises:
        UnknownField: no such field; the message lists the fields that exist there.
    """
    walked, field, cls = _lookup(path)
    out = [f"FIELD: {'.'.join(walked) or 'FineTuneJob'}"]
    if field is not None:
        out.append(f"TYPE:  {_describe_type(field.annotation)}")
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = "(defaults of its fields)"
            out.append(f"DEFAULT: {default!r}" if default is not None else "DEFAULT: (unset)")
        else:
            out.append("REQUIRED")
        out.append("")
        out.append(textwrap.fill(field.description or "", width=100))
    elif cls is not None:
        out += ["", textwrap.fill((cls.__doc__ or "").strip(), width=100)]
    if cls is not None:
        out += ["", "FIELDS:"]
        for name, f in cls.model_fields.items():
            req = " (required)" if f.is_required() else ""
            out.append(f"  {f.alias or name}  <{_describe_type(f.annotation)}>{req}")
            out.append(textwrap.indent(textwrap.fill(f.description or "", width=96), "    "))
    return "\n".join(out)
