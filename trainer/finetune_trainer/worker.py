"""One training process (a rank): what the launcher starts per GPU, in a pod or on a laptop.

It runs the recipe and tells the launcher how it ended, without ever waiting on a peer to do so: a failure is
classified (the user's input: exit 2; a peer that failed or stopped answering: 3; preempted: 143; anything
else: 1), written as a one-line report with this rank into the run folder (the launcher prints the first one
and puts it in the termination message), and the process leaves at once with `os._exit` — no collective
teardown, which is where a rank whose peer died used to hang forever. Only a run that succeeded on every rank
destroys its process group (the recipe does that).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Optional

from finetune_api.contract import ExitCode, TerminationMessage, UserError
from finetune_api.trainer_config import TrainerConfig

RUN_DIR_ENV = "FINETUNE_RUN_DIR"


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def classify(e: BaseException) -> tuple[int, str, str]:
    """(exit code, reason, one-line message) for an exception that ended this rank."""
    from .recipe import Preempted

    r = rank()
    if isinstance(e, Preempted):
        return ExitCode.PREEMPTED, "Preempted", str(e)
    if isinstance(e, UserError):
        return ExitCode.INPUT_ERROR, type(e).__name__, str(e)
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        where = f" writing {e.filename}" if e.filename else ""
        return ExitCode.INPUT_ERROR, "DiskFull", (f"rank {r}: no space left on the device{where}; free space on "
                                                  "the output volume or make it larger (finetune plan prints "
                                                  "the disk a run needs)")
    name = type(e).__name__
    text = str(e).strip().splitlines()[0] if str(e).strip() else name
    if name == "OutOfMemoryError":
        return ExitCode.INPUT_ERROR, "OutOfMemory", (
            f"rank {r}: out of GPU memory ({text[:300]}); lower spec.training.microBatchSize, set "
            "gradientCheckpointing true, shorten spec.dataset.maxLength, or shard more (finetune plan shows the "
            "estimate)")
    timed_out = "timed out" in text.lower() or "timeout" in text.lower()
    if name in ("DistBackendError", "DistNetworkError", "DistStoreError") or _peer_gone(text) or (
            timed_out and any(k in text.lower() for k in ("gloo", "nccl", "c10d", "collective", "barrier"))):
        timeout = timed_out
        return ExitCode.PEER_FAILED, "CollectiveTimeout" if timeout else "PeerFailed", (
            f"rank {r}: " + ("a collective timed out (spec.distributed.timeoutSeconds): another rank stopped "
                             "answering" if timeout else "another rank failed or left the run") + f" ({text[:300]})")
    return ExitCode.FAILED, name, f"rank {r}: unexpected {name}: {text[:1000]} (a bug: the traceback is above)"


def _peer_gone(text: str) -> bool:
    t = text.lower()
    return any(s in t for s in ("connection closed by peer", "connection reset by peer", "broken pipe",
                                "connection refused", "socket closed", "gloo::enforcenotmet"))


def report(code: int, reason: str, message: str) -> None:
    """Leave this rank's failure where the launcher reads it (or print it, when run without a launcher)."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        print(f"error: {message}", file=sys.stderr, flush=True)
        return
    doc = {"rank": rank(), "code": int(code), "reason": reason, "message": message, "time": time.time()}
    tmp = Path(run_dir) / f".failure-rank-{rank()}.tmp"
    tmp.write_text(json.dumps(doc), encoding="utf-8")
    tmp.replace(Path(run_dir) / f"failure-rank-{rank()}.json")


def report_result(summary: dict) -> None:
    """Rank 0: the run's summary, for the launcher's termination message."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir or rank() != 0:
        return
    msg = TerminationMessage(outcome="Succeeded", steps=summary.get("steps"), final_loss=summary.get("final_loss"),
                             final_eval_loss=summary.get("final_eval_loss"),
                             eval_exact_match=summary.get("eval_exact_match"), output_path=summary.get("output_path"),
                             manifest_sha256=summary.get("manifest_sha256"))
    (Path(run_dir) / "result.json").write_text(msg.to_text(), encoding="utf-8")


def main(argv: Optional[list[str]] = None) -> int:
    """Run one trainer process; the exit status tells the launcher how it ended."""
    from .session import install_stop_handler

    install_stop_handler()  # a SIGTERM during set-up is a stop request too, not a kill
    ap = argparse.ArgumentParser(prog="finetune_trainer.worker", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="TrainerConfig JSON file")
    args = ap.parse_args(argv)
    try:
        cfg = TrainerConfig.model_validate_json(Path(args.config).read_text(encoding="utf-8"))
        from .recipe import run

        summary = run(cfg)
    except BaseException as e:  # noqa: BLE001 - every way out is classified and reported, none waits on a peer
        if isinstance(e, SystemExit):
            raise
        code, reason, message = classify(e)
        if code == ExitCode.PREEMPTED:
            return int(code)  # not a failure: rank 0 said where the checkpoint is
        if code == ExitCode.FAILED:
            print(f"rank {rank()}: unexpected error (a bug in finetune-operator; please report it with this "
                  "traceback):", file=sys.stderr)
            traceback.print_exc()
        report(code, reason, message)
        return int(code)
    report_result(summary)
    return ExitCode.SUCCEEDED


def exit_process(code: int) -> None:
    """Exit with `code` without interpreter finalization in a multi-process run.

    At finalization, gloo's and NCCL's C++ threads can still hold work whose destruction aborts or blocks
    (a known PyTorch teardown race); a failed rank must not wait on peers either. Every output is written and
    fsynced before this point, so nothing is lost by leaving at once.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 or code != 0:
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    exit_process(main())
