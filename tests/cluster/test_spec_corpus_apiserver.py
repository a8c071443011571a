"""The malformed-spec corpus against a real API server: `kubectl create --dry-run=server --validate=strict` refuses
every case the CRD's schema or CEL (or kubectl itself) can refuse, and accepts exactly the ones the corpus says only
the operator or the trainer can check — so that list (docs/errors.md, last column) is true, not hoped.

What each accepted case becomes in a cluster: `operator: InvalidSpec` — the operator's pydantic validation or its
render refuses it at once (phase Failed, condition Failed/InvalidSpec, a Warning event InvalidSpec naming the
field); `trainer: <Reason>` — the pod's trainer refuses it before loading weights (exit 2, no retry by the pod
failure policy; phase Failed, condition reason <Reason>, the message in the termination log); `scheduler:` /
`accepted:` — not a mistake in a cluster (a GPU node runs it, or it waits for one).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from support.spec_corpus import CASES

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "finetunejobs.finetune.io.yaml"
PLACES = {"model": "/models/tiny", "data": "/data/train.jsonl", "dir": "/data", "out": "/out/demo"}
REFUSED_BY_SERVER = ("schema", "cel", "client")
# cases that only exist on a laptop: a file that is not there, a folder, bytes kubectl would read differently
LOCAL_ONLY = {"a-folder", "no-such-file", "not-utf8"}


@pytest.fixture(scope="module")
def cp(control_plane):
    if control_plane.kubectl("get", "crd", "finetunejobs.finetune.io").returncode != 0:
        r = control_plane.kubectl("create", "-f", str(CRD))
        assert r.returncode == 0, f"the API server refused the generated CRD: {r.stderr}"
    control_plane.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.finetune.io", "--timeout=60s",
                          check=True)
    return control_plane


@pytest.fixture(scope="module")
def ns(cp):
    name = cp.create_namespace(f"corpus-{uuid.uuid4().hex[:8]}")
    yield name
    cp.kubectl("delete", "namespace", name, "--wait=false")


def _text(case) -> str:
    text = case.raw.decode("utf-8", "replace") if case.raw is not None else case.text
    for k, v in PLACES.items():
        text = text.replace("{" + k + "}", v)
    return text


@pytest.mark.parametrize("case", [c for c in CASES if c.id not in LOCAL_ONLY], ids=lambda c: c.id)
def test_the_api_server_refuses_what_the_schema_can_say_and_accepts_the_rest(cp, ns, case):
    r = cp.kubectl("create", "--dry-run=server", "--validate=strict", "-n", ns, "-f", "-", input=_text(case))
    said = (r.stdout + r.stderr).strip()
    if case.server in REFUSED_BY_SERVER:
        assert r.returncode != 0, f"{case.id}: the API server accepted it; the corpus says {case.server} refuses it"
        if case.server in ("schema", "cel") and case.field:
            parts = [p.split("[")[0] for p in case.field.split(".")]
            assert parts[-1] in said or parts[-2] in said, f"{case.id}: refused without naming {case.field}: {said}"
    else:
        assert r.returncode == 0, (f"{case.id}: refused by the API server ({said}); the corpus says only "
                                   f"{case.server} can — mark it schema or cel")


def test_every_case_says_who_refuses_it_in_a_cluster():
    known = ("operator: ", "trainer: ", "scheduler: ", "accepted: ")
    for c in CASES:
        assert c.server in REFUSED_BY_SERVER or c.server.startswith(known), f"{c.id}: server={c.server!r}"
