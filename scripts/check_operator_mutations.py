"""Make each of the review's mutations of the operator (issue 12) and check that the fast tier catches it.

Why a script: a test suite that lets a deleted line through is a suite that only ran the code. Each mutation below
is applied to this clone's source, the operator's unit tests run, and the source is restored whatever happens;
the script fails if any mutation survives.

    .venv/bin/python scripts/check_operator_mutations.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OP = "operator/finetune_operator/"
MUTATIONS = {  # name: (file, original text, mutated text)
    "status-key removal in the status patch": (
        OP + "reconcile.py", "    patch: dict = {k: None for k in old if k not in new}", "    patch: dict = {}"),
    "the per-job lock": (
        OP + "reconcile_queue.py", "        if key in self._dirty:\n            self._dirty[key] = True\n            return\n", ""),
    "the terminal-phase skip": (
        OP + "reconcile.py", "        if previous.phase not in TERMINAL:\n            try:", "        if True:\n            try:"),
    "a spec error made transient (was PermanentError -> TemporaryError)": (
        OP + "reconcile.py", 'error, permanent = ("InvalidSpec", str(e)), True',
        'error, permanent = ("InvalidSpec", str(e)), False'),
    "pruning of the never-true Suspended condition": (
        OP + "status.py", '            del conds[ctype]  # "resumed"', '            pass  # "resumed"'),
    "event names derived from the transition": (
        OP + "reconcile.py", 'ident = "|".join([ftj["metadata"]["uid"]', 'ident = "|".join([str(time.time_ns()), ftj["metadata"]["uid"]'),
}


def main() -> int:
    survived = []
    for name, (rel, old, new) in MUTATIONS.items():
        path = ROOT / rel
        original = path.read_text()
        if old not in original:
            print(f"? {name}: the code changed, update this script ({rel})")
            survived.append(name)
            continue
        path.write_text(original.replace(old, new, 1))
        try:
            res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "tests/unit/operator"], cwd=ROOT,
                                 capture_output=True, text=True, timeout=600)
        finally:
            path.write_text(original)
        caught = res.returncode != 0
        first = next((line for line in res.stdout.splitlines() if line.startswith("FAILED")), "")
        print(f"{'caught' if caught else 'SURVIVED'}: {name}  {first}")
        if not caught:
            survived.append(name)
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main())
