"""The corpus of malformed specs (tests/support/spec_corpus_cases.py): every one refused by `finetune validate`,
naming the field path and the line marked in the file, with no traceback — and docs/errors.md is what they say.
"""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel

from finetune_api.job import FineTuneJobSpec
from support import errors_doc
from support.corpus_runner import corpus_model, run_all, table
from support.spec_corpus import CASES, by_id


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("corpus")
    return run_all(work / "work", corpus_model(work / "model"))


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_each_malformed_spec_is_refused_naming_its_field_and_line(results, case_id):
    case, result, verdict = results[case_id]
    assert verdict == "named", (
        f"{case_id}: {verdict} (want field {case.field!r} at line {case.line} saying {case.fragment!r}); "
        f"finetune validate exited {result.code}:\n{result.err}")


def test_the_corpus_is_large_and_its_table_is_clean(results):
    assert len(CASES) >= 150 and len(by_id()) == len(CASES)
    assert table(results) == {"named": len(CASES), "unclear": 0, "accepted": 0, "traceback": 0}


def _leaves(cls: type[BaseModel], path: str) -> list[str]:
    out = []
    for name, f in cls.model_fields.items():
        sub = f"{path}.{f.alias or name}"
        inner = [a for a in typing.get_args(f.annotation) or (f.annotation,)]
        models = [a for a in _flat(inner) if isinstance(a, type) and issubclass(a, BaseModel)]
        out += _leaves(models[0], sub) if models else [sub]
    return out


def _flat(args):
    for a in args:
        nested = typing.get_args(a)
        if nested:
            yield from _flat(nested)
        else:
            yield a


def test_every_field_of_the_spec_has_a_malformed_case():
    """Not a sample: each leaf field of spec (and metadata's checked ones) is broken by at least one case."""
    covered = {re.sub(r"\[\d+\]", "", c.field) if c.field else "" for c in CASES}
    covered |= {p.rsplit(".", 1)[0] for p in covered}  # a case on spec.x.y covers spec.x too
    # defaults a user cannot get wrong in a way the API refuses: free text and open objects
    free = {"spec.dataset.hubSplit", "spec.dataset.paddingFree", "spec.scheduling.affinity", "spec.suspend",
            "spec.dataset.hubId", "spec.model.volume.claimName", "spec.dataset.volume.claimName",
            "spec.output.volume.create.storageClassName"}
    missing = [p for p in _leaves(FineTuneJobSpec, "spec") if p not in covered and p not in free]
    assert not missing, f"fields with no malformed case: {missing}"


def test_docs_errors_md_is_what_the_corpus_says(results):
    assert errors_doc.DOC.read_text(encoding="utf-8") == errors_doc.render(results), (
        "docs/errors.md is stale: run `make errors-doc` and commit")
