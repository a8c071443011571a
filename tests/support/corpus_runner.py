"""Running the malformed-spec corpus through `finetune validate`, in process, and judging each answer.

Every case gets its own folder with its `job.yaml`; the model (a tiny one, created once), the data file and
the output folder are real, so the only thing wrong with a case is its one mistake. A case is judged as a user
would: refused with its field path and line (`named`), refused without them (`unclear`), accepted (`accepted`),
or a crash (`traceback`).
"""

from __future__ import annotations

import contextlib
import io
import os
import traceback
from pathlib import Path

from support.spec_corpus import CASES, Case, Result

DATA_LINE = ('{"messages": [{"role": "user", "content": "Is 2 even?"}, '
             '{"role": "assistant", "content": "even"}]}\n')


def corpus_model(path: Path) -> Path:
    """The tiny model every corpus run uses (the same shape, so model messages are the same everywhere)."""
    from finetune_trainer.tiny_model import create_tiny_model

    return create_tiny_model(path, [DATA_LINE] * 50, layers=2, hidden=64, heads=4)


def prepare(work: Path, model: Path) -> dict[str, str]:
    """The placeholders every case fills in: the model, a small valid data file and its folder."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text(DATA_LINE * 32)
    return {"model": str(model), "data": str(data / "train.jsonl"), "dir": str(data)}


def _setup(case: Case, folder: Path) -> Path:
    """Create what the case needs in its folder; returns the path `finetune validate` is given."""
    spec = folder / "job.yaml"
    if case.setup == "spec-is-folder":
        spec = folder / "jobs"
        spec.mkdir()
        (spec / "job.yaml").write_text("# the job is in here\n")
    elif case.setup == "spec-missing":
        spec = folder / "nope.yaml"
    elif case.setup == "empty-model":
        (folder / "empty-model").mkdir()
    elif case.setup == "bad-model":
        (folder / "bad-model").mkdir()
        (folder / "bad-model" / "config.json").write_text("{not json")
    elif case.setup == "foreign-folder":
        (folder / "project").mkdir()
        (folder / "project" / "README.md").write_text("my project\n")
    elif case.setup == "foreign-metrics":
        (folder / "old-run").mkdir()
        (folder / "old-run" / "metrics.jsonl").write_text("epoch,loss\n1,0.5\n")
    elif case.setup == "empty-folder":
        (folder / "empty-folder").mkdir()
    return spec


def run_case(case: Case, work: Path, places: dict[str, str]) -> Result:
    """Write the case's job file and run `finetune validate` on it (deep checks only where the case needs them)."""
    from finetune_cli.main import main

    folder = work / "cases" / case.id
    folder.mkdir(parents=True, exist_ok=True)
    spec = _setup(case, folder)
    if spec.suffix == ".yaml" and case.setup != "spec-missing":
        if case.raw is not None:
            spec.write_bytes(case.raw)
        else:
            text = case.text
            for k, v in {**places, "out": str(folder / "out")}.items():
                text = text.replace("{" + k + "}", v)
            spec.write_text(text, encoding="utf-8")
    args = ["validate", *case.args, "--skip-data"] + ([] if case.deep else ["--skip-model"])
    out, err = io.StringIO(), io.StringIO()
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a hub id must fail at once here, not after network time-outs
    _hub_offline(True)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args + [str(spec)])
        result = Result(int(code), out.getvalue(), err.getvalue())
    except BaseException:  # noqa: BLE001 - a crash is what the corpus is there to catch
        result = Result(-1, out.getvalue(), err.getvalue() + traceback.format_exc(), traceback=True)
    finally:
        _hub_offline(saved == "1")
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved
    result.extra["shown"] = shown(result.err.replace(places["model"], "<model>"), work)
    return result


def _hub_offline(on: bool) -> None:
    """huggingface_hub reads HF_HUB_OFFLINE once, at import: set its constant too when it is already imported."""
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = on


def shown(err: str, work: Path) -> str:
    """The error as docs/errors.md shows it: temp folders replaced by `<dir>`, the `error:` prefix kept."""
    text = err.replace(str(work / "cases"), "<dir>").replace(str(work), "<dir>")
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def verdict(case: Case, result: Result) -> str:
    """`named`, `unclear`, `accepted` or `traceback`."""
    if result.traceback or "Traceback" in result.err:
        return "traceback"
    if result.code == 0:
        return "accepted"
    if result.code != 2:
        return "traceback"
    names = (case.field is None or f"{case.field}" in result.err) and case.fragment in result.err
    line = case.line
    spec_name = "jobs" if case.setup == "spec-is-folder" else ("nope.yaml" if case.setup == "spec-missing"
                                                                else "job.yaml")
    located = f"{spec_name}:{line}" in result.err if line else spec_name in result.err or case.field is None
    return "named" if names and located else "unclear"


def run_all(work: Path, model: Path) -> dict[str, tuple[Case, Result, str]]:
    """Every case's (case, result, verdict)."""
    places = prepare(work, model)
    out = {}
    for case in CASES:
        result = run_case(case, work, places)
        out[case.id] = (case, result, verdict(case, result))
    return out


def table(results: dict) -> dict[str, int]:
    """The counts by verdict, in the issue's order."""
    counts = {"named": 0, "unclear": 0, "accepted": 0, "traceback": 0}
    for _, _, v in results.values():
        counts[v] += 1
    return counts


if __name__ == "__main__":  # python -m support.corpus_runner (PYTHONPATH=tests): the table, and what is not named
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        res = run_all(Path(tmp) / "work", corpus_model(Path(tmp) / "model"))
        for cid, (case, r, v) in res.items():
            if v != "named":
                print(f"--- {cid} [{v}] field={case.field} line={case.line} want={case.fragment!r}\n{r.err[-1500:]}")
        print(table(res))
