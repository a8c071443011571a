"""`finetune validate` and `finetune explain`: answers from the API package alone (no torch, no cluster)."""

from __future__ import annotations

import sys

from finetune_api import load_job


def cmd_validate(args) -> int:
    """Check a FineTuneJob file; errors name the file, line and field."""
    job = load_job(args.spec)
    s = job.spec
    print(f"{args.spec}: valid FineTuneJob '{job.metadata.name}' ({s.method.type} + {s.objective.type}, "
          f"{s.dataset.format} data)")
    return 0


def cmd_explain(args) -> int:
    """Print the reference of one field (the same text as `kubectl explain`)."""
    from finetune_api.explain import UnknownField, explain

    try:
        print(explain(args.field or ""))
    except UnknownField as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    return 0
