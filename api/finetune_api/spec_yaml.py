"""Reading a FineTuneJob file as the Kubernetes API server would, keeping the line of every key.

Why not `yaml.safe_load`: it is more forgiving than the path a spec takes to the API server, so a file that
`kubectl apply` refuses used to validate locally and then train on something the user did not write.
- A key given twice: PyYAML silently keeps the last value (a job trained at lr 0.5 when the first line said
  2e-4); the API server refuses duplicate fields. We refuse them, naming both lines.
- `2e-4` (no dot): PyYAML reads YAML 1.1 and makes it the *string* "2e-4"; kubectl's YAML reader makes it a
  number. We read such scalars as numbers too, so the same file means the same thing in both places.
- A trailing `---` is an empty document, not a second job; a real second document is refused at its line.
- Keys must be strings (JSON has no other kind), and the file must fit in what the API server stores.

`read_spec_text` returns the plain data and the YAML node tree; `line_of` finds the line of a field path in
the tree, which is how every error message names its line.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import yaml

MAX_BYTES = 1024 * 1024  # the API server stores objects of at most ~1.5 MiB (etcd); a spec is a few KiB


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 (and Go) floats: `1e-4`, `2E5` are numbers, as kubectl reads them."""


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml_problem(e: yaml.YAMLError, source: str, text: str) -> str:
    """`source:line:column: not valid YAML: problem` (JSON too: a JSON file is read as YAML)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    cmark = getattr(e, "context_mark", None)
    if cmark is not None and mark is not None and ("end of stream" in problem or "<stream end>" in problem):
        mark, cmark = cmark, mark  # never closed: the line that opened it is the one to fix
        what = (context or "").replace("while scanning ", "").replace("while parsing ", "").replace("a ", "", 1)
        problem = f"the {what} that starts here is never closed (the file ends at line {cmark.line + 1})"
        ctx = ""
    else:
        ctx = f" ({context} that starts at line {cmark.line + 1}, column {cmark.column + 1})" if context and cmark else ""
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    kind = "JSON" if text.lstrip()[:1] in ("{", "[") else "YAML"
    return f"{where}: not valid {kind}: {problem}{ctx}"


def _duplicates(node: yaml.Node, path: str, out: list[str], source: str) -> None:
    """Append one problem per repeated key (and per non-string key) anywhere under `node`."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag != "tag:yaml.org,2002:str":
                shown = k.value if isinstance(k, yaml.ScalarNode) else "a " + type(k).__name__[:-4].lower()
                out.append(f"{source}:{k.start_mark.line + 1}: {path or '(top level)'}: the key {shorten(shown)!r} is "
                           "not a string; field names are strings (quote it, or fix the indentation)")
                continue
            if k.value == "<<":  # a YAML merge key: PyYAML expands it, the keys it brings are checked there
                continue
            line = k.start_mark.line + 1
            child = f"{path}.{k.value}" if path else k.value
            if k.value in seen:
                out.append(f"{source}:{line}: {child}: given twice (first at line {seen[k.value]}); YAML readers, "
                           "kubectl's too, silently keep only the last one: delete one")
            else:
                seen[k.value] = line
            _duplicates(v, child, out, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _duplicates(item, f"{path}[{i}]", out, source)


def read_spec_text(text: str, source: str) -> tuple[Any, Optional[yaml.Node], list[str]]:
    """Parse spec text the way the API server's reader does.

    Args:
        text: the YAML (or JSON) text.
        source: the file's name, for messages.

    Returns:
        (data, root node, problems): `problems` lists `source:line: ...` lines (YAML syntax, a second document,
        duplicate or non-string keys, size); when it is not empty the data must not be used.
    """
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        return None, None, [f"{source}: the file is {size:,} bytes; a FineTuneJob is at most {MAX_BYTES:,} "
                            "(the API server refuses larger objects): keep data and templates in files, not in the spec"]
    try:
        docs = [d for d in yaml.compose_all(text, Loader=StrictLoader)
                if not (isinstance(d, yaml.ScalarNode) and d.tag == "tag:yaml.org,2002:null")]
    except yaml.YAMLError as e:
        return None, None, [_yaml_problem(e, source, text)]
    if not docs:
        return None, None, [f"{source}: the file holds no YAML document (it is empty or only comments)"]
    if len(docs) > 1:
        lines = text.splitlines()
        line = docs[1].start_mark.line + 1
        while line > 1 and not lines[line - 1].startswith("---"):  # the '---' that starts it
            line -= 1
        return None, None, [f"{source}:{line}: a second YAML document starts here; a FineTuneJob file holds one job "
                            "(put each job in its own file)"]
    node = docs[0]
    problems: list[str] = []
    _duplicates(node, "", problems, source)
    if problems:
        return None, node, problems
    try:
        data = next(d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None)  # noqa: S506 - safe
    except yaml.YAMLError as e:  # e.g. an unknown tag (!!python/object): composing accepts it, building does not
        return None, node, [_yaml_problem(e, source, text)]
    if not isinstance(data, dict):
        return None, node, [f"{source}:{node.start_mark.line + 1}: expected a mapping (apiVersion, kind, metadata, "
                            f"spec), got {_kind(data)}"]
    return data, node, []


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"the text {shorten(value)!r}"
    return f"{type(value).__name__} {shorten(repr(value))}"


def shorten(text: str, limit: int = 80) -> str:
    """`text` cut to `limit` characters, saying how long it was (a 5,000-character value is never echoed whole)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 1]}… ({len(text):,} characters)"


def line_of(node: Optional[yaml.Node], path: list) -> Optional[int]:
    """1-based line of the deepest YAML node on `path` (the key itself for mapping entries); None without a tree."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == part:
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
