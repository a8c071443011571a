"""Changing a spec dict by dotted paths in tests: one helper for the CLI runs and the rule tables."""

from __future__ import annotations


def apply_changes(spec: dict, changes: dict, sep: str = ".") -> dict:
    """Set each `a<sep>b<sep>c` path of `changes` in `spec` (creating parents); a value of None removes the key.

    Returns:
        `spec`, changed in place.
    """
    for dotted, value in changes.items():
        node = spec
        *head, last = dotted.split(sep)
        for k in head:
            node = node.setdefault(k, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return spec
