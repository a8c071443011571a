"""The corpus of malformed FineTuneJobs: every field and rule, each with where it must be refused and what it says.

One case is a job file with one mistake. The line the error must name is marked in the file itself with a
`# <` comment, so the expectation is written by a person next to the mistake, not computed by the code under
test. `tests/unit/api/test_spec_corpus.py` runs each case through `finetune validate` (exit 2, the field path and
`job.yaml:<line>` in the message); `tests/cluster/test_spec_corpus_apiserver.py` sends each to a real API server;
`tests/support/errors_doc.py` turns the results into docs/errors.md.

`server` says who refuses the case in a cluster:
- `schema` / `cel`: the API server (`kubectl apply` fails) through the CRD's OpenAPI schema or a CEL rule;
- `client`: kubectl itself (not YAML, no apiVersion/kind, ...);
- otherwise the API server accepts it and the text names what refuses it later, e.g.
  `operator: InvalidSpec` (the job goes Failed at once, a Warning event InvalidSpec names the field) or
  `trainer: OutputPathError` (the pod fails with exit 2; condition Failed, reason OutputPathError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

BASE = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata:
  name: demo
spec:
  model:
    path: {model}
  dataset:
    paths: [{data}]
    format: messages
  output:
    path: {out}
"""
MARK = "# <"


@dataclass(frozen=True)
class Case:
    """One malformed job.

    Attributes:
        id: short unique name.
        group: the class of mistake (a section of docs/errors.md).
        text: the job file, with `{model}`, `{data}`, `{out}` placeholders and a `# <` mark on the line to name.
        field: the field path the message must name (None for file-level problems).
        fragment: text the message must contain (what makes it actionable).
        server: who refuses it in a cluster (see the module docstring).
        args: extra `finetune validate` arguments.
        deep: needs the model checks (tokenizer, architecture, plan on this machine).
        raw: the file's bytes, when they are not text (then `text` is only shown in docs).
        setup: a name of a fixture the runner applies in the case's folder (see runner.SETUPS).
    """

    id: str
    group: str
    text: str
    field: Optional[str]
    fragment: str
    server: str = "schema"
    args: tuple = ()
    deep: bool = False
    raw: Optional[bytes] = None
    setup: Optional[str] = None

    @property
    def line(self) -> Optional[int]:
        """The 1-based line marked `# <`, or None."""
        for i, text in enumerate(self.text.splitlines(), 1):
            if MARK in text:
                return i
        return None


CASES: list[Case] = []


def add(id: str, group: str, block: str, field: Optional[str], fragment: str, **kw) -> None:
    """A case: BASE with `block` appended (its lines start at 13)."""
    CASES.append(Case(id, group, BASE + block, field, fragment, **kw))


def sub(id: str, group: str, old: str, new: str, field: Optional[str], fragment: str, **kw) -> None:
    """A case: BASE with `old` replaced by `new`."""
    assert old in BASE, old
    CASES.append(Case(id, group, BASE.replace(old, new, 1), field, fragment, **kw))


def raw(id: str, group: str, text: str, field: Optional[str], fragment: str, **kw) -> None:
    """A case given as its whole file."""
    CASES.append(Case(id, group, text, field, fragment, **kw))


from . import spec_corpus_cases  # noqa: E402,F401  (fills CASES)


def by_id() -> dict[str, Case]:
    out = {}
    for c in CASES:
        assert c.id not in out, f"duplicate case id {c.id}"
        out[c.id] = c
    return out


@dataclass
class Result:
    """What `finetune validate` did with a case."""

    code: int
    out: str
    err: str
    traceback: bool = False
    extra: dict = field(default_factory=dict)
