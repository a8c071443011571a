"""The command blocks of docs/user-guide.md, by name, with the test that exercises each.

Why: the guide promises that every command in it works; a block is marked in the guide with
`<!-- block: NAME; exercised by: tests/...py::test_name -->` right above its ```bash fence, so a test can find it,
run it as written (tests/cluster/test_user_guide.py), or check the named test exists (tests/unit/test_user_guide.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "user-guide.md"
_TAG = re.compile(r"<!-- block: (?P<name>[\w-]+); exercised by: (?P<test>\S+) -->\s*\n```bash\n(?P<body>.*?)```",
                  re.S)


@dataclass(frozen=True)
class Block:
    name: str
    test: str  # path::function
    commands: tuple[str, ...]


def blocks(text: str | None = None) -> dict[str, Block]:
    """Every tagged ```bash block of the guide, by name (commands without their trailing comments)."""
    text = GUIDE.read_text() if text is None else text
    out = {}
    for m in _TAG.finditer(text):
        cmds = tuple(line.split("  #")[0].strip() for line in m["body"].splitlines()
                     if line.strip() and not line.strip().startswith("#"))
        out[m["name"]] = Block(m["name"], m["test"], cmds)
    return out


def bash_fences(text: str | None = None) -> int:
    """How many ```bash blocks the guide has (each must be tagged)."""
    text = GUIDE.read_text() if text is None else text
    return text.count("```bash\n")
