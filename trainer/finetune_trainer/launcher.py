"""`finetune-train`: one launcher per node — completes the launch plan, starts the workers, ends them together.

It is the pod's command and what `finetune run` calls, so a laptop and a cluster start training the same way:
read the TrainerConfig, complete its launch plan where the operator could not (`finetune_plan.plan_launch`
with this node's GPU and the model's config), take the output folder's lock, start one worker process per GPU
(or CPU process) with the usual RANK/WORLD_SIZE/MASTER_ADDR environment (`env://` initialisation; node rank 0
hosts the store), then watch them and write the node's termination message.

Why not torchrun's elastic agent: it lacks the three things a run that must never hang needs. (1) When one
worker fails, the others are often blocked inside a collective where no Python signal handler runs; the agent
then waits 30 s per stop and reports a `ChildFailedError` traceback. Here the first failure is recorded with
its rank and one-line reason (each worker writes it to the run folder before exiting), the survivors get
SIGTERM and, `PEER_GRACE_SECONDS` later, SIGKILL, and the launcher exits with the first failure's code.
(2) A SIGTERM (pod deletion, suspend, Ctrl-C) must give the workers time to finish a checkpoint: it is
forwarded and the launcher waits for them (the pod's grace period bounds it; a second Ctrl-C stops at once),
and ends with exit code 143, a preemption, not an error. (3) Workers must not outlive their launcher: they
stay in its process group and die with it (PR_SET_PDEATHSIG), so a killed `finetune run` leaves no trainer
writing into the output folder — which is also locked, so a second run cannot write there at the same time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune_api.contract import TERMINATION_LOG, ExitCode, TerminationMessage, UserError
from finetune_api.trainer_config import TrainerConfig

WORKER_MODULE = "finetune_trainer.worker"
PEER_GRACE_SECONDS = 5.0  # after a failure: how long survivors get to exit before SIGKILL
POLL_SECONDS = 0.1
RUN_DIR_ENV = "FINETUNE_RUN_DIR"  # where workers leave their failure reports and rank 0 its result
NODE_RANK_ENVS = ("FINETUNE_NODE_RANK", "JOB_COMPLETION_INDEX")  # Kubernetes' Indexed Job sets the latter


@dataclass
class Failure:
    """The first thing that went wrong on this node."""

    rank: int
    code: int
    reason: str
    message: str


def complete_plan(cfg: TrainerConfig) -> TrainerConfig:
    """`cfg` with its launch plan complete: what the operator left open is planned here, for this node.

    Raises:
        ModelLoadError: the model's config cannot be read (the plan needs its shape).
        DoesNotFit: nothing fits this GPU.
    """
    if cfg.plan.complete:
        return cfg
    from finetune_plan import Machine, ModelShape, plan_launch

    from .liger import installed
    from .local_run import gpu_memory_bytes
    from .modeling import model_config

    p = cfg.plan
    machine = Machine(device=p.device, nodes=p.nodes, nproc_per_node=p.nproc_per_node,
                      gpu_bytes=gpu_memory_bytes() if p.device == "cuda" else None,
                      fused_kernels=installed() if p.device == "cuda" else False)
    try:
        shape = ModelShape.from_config(model_config(cfg))
    except KeyError as e:
        from .errors import ModelLoadError

        raise ModelLoadError(f"spec.model: its config.json has no {e.args[0]!r}, which the memory plan needs") \
            from None
    plan = plan_launch(cfg.job, machine, shape)
    for field in ("strategy", "micro_batch", "gradient_accumulation", "checkpointing"):
        given = getattr(p, field)
        if given is not None and given != getattr(plan, field):  # the same function decided both: a bug if not
            raise RuntimeError(f"launch plan: {field} was {given!r} in the config but {getattr(plan, field)!r} here")
    return cfg.model_copy(update={"plan": plan})


def node_rank() -> int:
    """This node's rank (0 on a single node)."""
    for name in NODE_RANK_ENVS:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_env(cfg: TrainerConfig, node: int, local: int, master: tuple[str, int], run_dir: Path) -> dict:
    """The environment of one worker: torch's env:// variables plus the run folder."""
    n = cfg.plan.nproc_per_node
    env = dict(os.environ)
    env.update(RANK=str(node * n + local), WORLD_SIZE=str(cfg.world_size), LOCAL_RANK=str(local),
               LOCAL_WORLD_SIZE=str(n), GROUP_RANK=str(node), NODE_RANK=str(node), MASTER_ADDR=master[0],
               MASTER_PORT=str(master[1]), **{RUN_DIR_ENV: str(run_dir)})
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    env.setdefault("PYTHONUNBUFFERED", "1")  # progress lines reach a pipe (tee, kubectl logs) as they happen
    return env


def read_failures(run_dir: Path) -> list[Failure]:
    """The failure reports the workers left, earliest first; peers that only saw another's failure last."""
    found = []
    for f in run_dir.glob("failure-rank-*.json"):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            continue
        found.append((doc.get("reason") == "PeerFailed", doc.get("time", 0.0),
                      Failure(doc["rank"], doc["code"], doc["reason"], doc["message"])))
    return [f for _, _, f in sorted(found, key=lambda x: (x[0], x[1]))]


class _Signals:
    """SIGTERM/SIGINT while workers run: forward a stop request once; a second SIGINT kills at once."""

    def __init__(self):
        self.stopping = False
        self.kill_now = False
        self.procs: list[subprocess.Popen] = []
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum, frame):
        if self.stopping and signum == signal.SIGINT:
            self.kill_now = True
            return
        self.stopping = True
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)


def run_workers(cfg: TrainerConfig, run_dir: Path, node: int = 0, echo=print) -> tuple[int, Optional[Failure]]:
    """Start this node's workers and wait for them; returns (exit code, the first failure or None)."""
    cfg_path = run_dir / "config.json"
    cfg_path.write_text(cfg.to_json(), encoding="utf-8")
    rdzv = cfg.rendezvous
    master = (rdzv.host, rdzv.port) if rdzv and cfg.nodes > 1 else ("127.0.0.1", _free_port())
    cmd = [sys.executable, "-m", WORKER_MODULE, "--config", str(cfg_path)]
    with _Signals() as sig:
        for local in range(cfg.plan.nproc_per_node):
            sig.procs.append(subprocess.Popen(cmd, env=worker_env(cfg, node, local, master, run_dir),
                                              preexec_fn=_die_with_parent))
        failed_at = None
        while True:
            codes = [p.poll() for p in sig.procs]
            if all(c is not None for c in codes):
                break
            bad = [c for c in codes if c not in (None, 0, ExitCode.PREEMPTED)]
            if bad and failed_at is None:
                failed_at = time.monotonic()
                for p in sig.procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
            if sig.kill_now or (failed_at is not None and time.monotonic() - failed_at > PEER_GRACE_SECONDS):
                for p in sig.procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(POLL_SECONDS)
    failures = read_failures(run_dir)
    codes = [p.returncode for p in sig.procs]
    if failures:
        return failures[0].code, failures[0]
    stopped = sig.stopping or any(c == ExitCode.PREEMPTED for c in codes)
    bad = [(r, c) for r, c in enumerate(codes) if c not in (0, ExitCode.PREEMPTED)
           and not (stopped and c == -signal.SIGTERM)]  # stopped before its handler was set: still a preemption
    if bad:
        r, c = bad[0]
        rank = node * cfg.plan.nproc_per_node + r
        how = f"was killed by signal {-c}" if c < 0 else f"exited with code {c}"
        hint = " (SIGKILL: often the host ran out of memory)" if c == -signal.SIGKILL else ""
        return ExitCode.FAILED, Failure(rank, ExitCode.FAILED, "WorkerDied",
                                        f"rank {rank} {how}{hint} without reporting a reason; see its output above")
    if any(c == ExitCode.PREEMPTED for c in codes) or sig.stopping:
        return ExitCode.PREEMPTED, None
    return ExitCode.SUCCEEDED, None


def termination_path(cfg: TrainerConfig) -> Optional[Path]:
    """Where the node's outcome is written: the config's path, else Kubernetes' default when it is writable."""
    if cfg.termination_log:
        return Path(cfg.termination_log)
    p = Path(TERMINATION_LOG)
    return p if p.exists() and os.access(p, os.W_OK) else None


def write_termination(cfg: Optional[TrainerConfig], msg: TerminationMessage) -> None:
    """Write the outcome where the operator reads it (cut to Kubernetes' limit, never blanked)."""
    p = termination_path(cfg) if cfg is not None else None
    if p is None:
        p = Path(TERMINATION_LOG) if os.access(TERMINATION_LOG, os.W_OK) else None
    if p is not None:
        try:
            p.write_text(msg.to_text(), encoding="utf-8")
        except OSError:
            pass


def launch(cfg: TrainerConfig, *, node: Optional[int] = None, echo=print) -> tuple[int, Optional[Failure]]:
    """Run `cfg` on this node: lock the output, start and watch the workers, write the termination message.

    Returns:
        (exit code, first failure): 0 done, 2 the user's input, 143 preempted (checkpoint saved), else failed.
    """
    from .output_dir import OutputLock

    node = node_rank() if node is None else node
    run_dir = Path(tempfile.mkdtemp(prefix="finetune-run-"))
    try:
        with OutputLock(cfg) if node == 0 else _nothing():
            code, failure = run_workers(cfg, run_dir, node, echo)
            if code != ExitCode.SUCCEEDED and node == 0:  # a killed save leaves temp folders: nothing partial stays
                from .checkpoint import remove_partial

                remove_partial(cfg.output_dir)
        if failure is not None:
            msg = TerminationMessage(outcome="Failed", reason=failure.reason, message=failure.message,
                                     rank=failure.rank)
        elif code == ExitCode.PREEMPTED:
            msg = TerminationMessage(outcome="Preempted", reason="Preempted",
                                     message="stopped by SIGTERM; a checkpoint was saved and a new run resumes from it")
        else:
            result = run_dir / "result.json"
            msg = TerminationMessage.from_text(result.read_text(encoding="utf-8")) if result.exists() else None
            msg = msg or TerminationMessage(outcome="Succeeded")
        write_termination(cfg, msg)
        return code, failure
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv: Optional[list[str]] = None) -> int:
    """`finetune-train --config FILE`: the pod's command (and the one a node runs by hand)."""
    ap = argparse.ArgumentParser(prog="finetune-train", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=os.environ.get("FINETUNE_CONFIG"), help="TrainerConfig JSON file")
    args = ap.parse_args(argv)
    if not args.config:
        ap.error("--config (or FINETUNE_CONFIG) is required")
    cfg = None
    try:
        cfg = TrainerConfig.model_validate_json(Path(args.config).read_text(encoding="utf-8"))
        cfg = complete_plan(cfg)
        from finetune_plan import describe

        from .capabilities import check_supported

        check_supported(cfg)

        print("plan: " + "; ".join(line.split(":", 1)[0] + ":" + line.split(":", 1)[1].strip()
                                   for line in describe(cfg.plan)), flush=True)
        code, failure = launch(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        write_termination(cfg, TerminationMessage(outcome="Failed", reason=type(e).__name__, message=str(e)))
        return ExitCode.INPUT_ERROR
    if failure is not None:
        print(f"error: {failure.message}", file=sys.stderr, flush=True)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
