"""Reading a FineTuneJob from YAML, as strictly as the API server does, with errors that name the file, the line
and the field path.

A user's first contact with the project is often a typo. pydantic knows *what* is wrong
(`spec.training.learningRate`: greater than 0); the YAML node tree knows *where* (job.yaml line 14). This
module joins the two, and adds what pydantic's messages lack: the allowed fields for an unknown key, with a
"did you mean" when one is close.

The local loader must refuse what `kubectl apply` refuses, or a spec validated here trains on something the
cluster would never accept: so types are strict (`rank: true` is not 1, `maxSteps: "5"` is not 5: the CRD's
`integer` refuses both), only the camelCase wire names are fields (`learning_rate` is an unknown key, as it is
to the API server), `apiVersion` and `kind` are required, and duplicate keys are refused (spec_yaml.py).
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ValidationError

from .contract import UserError
from .errors_format import format_errors
from .job import API_VERSION, KIND, FineTuneJob
from .spec_yaml import line_of, read_spec_text, shorten
from .status import FineTuneJobStatus


class SpecError(UserError):
    """A FineTuneJob that cannot be used, with one line per problem: `file:line: field.path: message`."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid FineTuneJob:\n  " + "\n  ".join(problems))


@dataclass
class SpecSource:
    """Where a job came from: the file's name and its YAML node tree, to put a line on any field path."""

    name: str
    node: Optional[yaml.Node] = None

    def where(self, path: str) -> str:
        """`file:line` of a dotted field path (`spec.training.maxSteps`, `spec.dataset.paths[1]`)."""
        line = line_of(self.node, split_path(path))
        return f"{self.name}:{line}" if line else self.name

    def locate(self, message: str) -> str:
        """`message` prefixed with `file:line: ` when it starts with a field path (`spec.x.y: ...` or `spec.x.y ...`)."""
        m = _LEADING_PATH.match(message)
        if not m or message.startswith(self.name):
            return message
        return f"{self.where(m.group(1))}: {message}"


_LEADING_PATH = re.compile(r"^(spec(?:\.[A-Za-z][A-Za-z0-9]*|\[\d+\])+)")


def locate(spec_file: str | Path, message: str) -> str:
    """`message` with the file and line of the field it starts with (`spec.x.y ...`), read from `spec_file`.

    For errors raised after loading (the launch plan, the output folder, the trainer's checks): they know the field,
    not the line. Left unchanged when the file cannot be read or the message names no field.
    """
    if not _LEADING_PATH.match(message):
        return message
    try:
        _, node, problems = read_spec_text(Path(spec_file).read_text(encoding="utf-8"), str(spec_file))
    except (OSError, UnicodeDecodeError):
        return message
    return message if problems else SpecSource(str(spec_file), node).locate(message)


def split_path(dotted: str) -> list:
    """`spec.dataset.paths[1]` -> ['spec', 'dataset', 'paths', 1]."""
    out: list = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out


def read_job_file(path: str | Path) -> str:
    """The text of a spec file.

    Raises:
        SpecError: the path is missing, a folder, unreadable or not UTF-8 (the message says what to give instead).
    """
    p = Path(path)
    if p.is_dir():
        inside = sorted(q.name for q in p.iterdir() if q.suffix in (".yaml", ".yml", ".json"))[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise SpecError([f"{p}: is a folder, not a FineTuneJob file; give the YAML file itself{hint}"])
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{p}: no such file"]) from None
    except UnicodeDecodeError as e:
        raise SpecError([f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); save the file as UTF-8"]) from None
    except OSError as e:
        why = "permission denied" if e.errno in (errno.EACCES, errno.EPERM) else (e.strerror or str(e))
        raise SpecError([f"{p}: cannot read the file: {why}"]) from None


def load_job(path: str | Path) -> FineTuneJob:
    """Parse and validate the FineTuneJob in the YAML file at `path`.

    Raises:
        SpecError: the file is missing, is not YAML, or does not validate; each line names the place.
    """
    return load_job_source(path)[0]


def load_job_source(path: str | Path) -> tuple[FineTuneJob, SpecSource]:
    """`load_job`, also returning the SpecSource that puts a line on later errors about a field."""
    text = read_job_file(path)
    return load_job_text_source(text, source=str(path))


def load_job_text(text: str, source: str = "<spec>") -> FineTuneJob:
    """Parse and validate FineTuneJob YAML (or JSON) text; `source` names it in errors."""
    return load_job_text_source(text, source)[0]


def load_job_text_source(text: str, source: str = "<spec>") -> tuple[FineTuneJob, SpecSource]:
    """`load_job_text`, also returning the SpecSource."""
    data, node, problems = read_spec_text(text, source)
    if problems:
        raise SpecError(problems)
    return validate_job(data, source=source, node=node), SpecSource(source, node)


def _header_problems(data: dict, source: str, node: Optional[yaml.Node]) -> list[str]:
    """apiVersion and kind: required, as the API server requires them (the model's defaults are for Python)."""
    out = []
    for key, want in (("apiVersion", API_VERSION), ("kind", KIND)):
        if key not in data:
            line = line_of(node, []) or 1
            out.append(f"{source}:{line}: {key}: required field is missing; add `{key}: {want}`")
    return out


def validate_job(data: Any, source: str = "<spec>", node: Optional[yaml.Node] = None) -> FineTuneJob:
    """Validate a FineTuneJob given as a dict, strictly (as the CRD would); errors name `source` and lines.

    Raises:
        SpecError: one line per problem.
    """
    if not isinstance(data, dict):
        raise SpecError([f"{source}: expected a mapping (apiVersion, kind, metadata, spec), got "
                         f"{type(data).__name__}"])
    problems = _header_problems(data, source, node)
    body = {k: v for k, v in data.items() if k != "status"}
    try:
        job = FineTuneJob.model_validate(body, strict=True, by_alias=True, by_name=False)
    except ValidationError as e:
        problems += format_errors(e, source, node)
        job = None
    status = data.get("status")
    if status is not None and job is not None:  # written by the operator (`kubectl get -o yaml`): read leniently
        try:
            job = job.model_copy(update={"status": FineTuneJobStatus.model_validate(status)})
        except (ValidationError, TypeError) as e:
            problems.append(f"{source}: status: not a FineTuneJob status ({shorten(str(e).splitlines()[0])}); "
                            "delete the status block, the operator writes it")
    if problems:
        raise SpecError(problems)
    return job
