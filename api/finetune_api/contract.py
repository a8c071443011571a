"""What the operator and the trainer must agree on, written once: exit codes, the termination message, metrics.

Why here: the trainer writes these and the operator reads them, in different images that share only this
package. A literal spelled on each side drifts (a renamed metric leaves a dashboard blank; a new exit code is
retried as a crash), so both import the names from this module and a test pins the round trip.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Literal, Optional

from pydantic import Field

from .base import SpecModel

TERMINATION_LOG = "/dev/termination-log"
TERMINATION_MESSAGE_LIMIT = 4096  # the kubelet keeps at most this many bytes of a container's message
METRICS_PORT = 8000  # rank 0 of each pod serves Prometheus metrics here


class UserError(ValueError):
    """A problem the user can fix (spec, data, model, machine): reported as one line, never a traceback."""


class ExitCode(IntEnum):
    """How a trainer process (and so its pod's container) ends; the operator's pod failure policy keys on it."""

    SUCCEEDED = 0
    FAILED = 1  # unexpected: a bug or a crash; Kubernetes may retry it
    INPUT_ERROR = 2  # the user's spec, data, model or machine: retrying cannot help
    PEER_FAILED = 3  # another rank failed or stopped answering; this rank stopped (the other's reason is the cause)
    PREEMPTED = 143  # SIGTERM (pod deleted, job suspended): a checkpoint was saved; not a failure


Outcome = Literal["Succeeded", "Failed", "Preempted"]


class TerminationMessage(SpecModel):
    """The small JSON a trainer pod's container leaves in its termination log (`kubectl describe pod` shows it).

    The operator turns it into `status.result` (on success) or the Failed condition's reason and message.
    """

    outcome: Outcome = Field(..., description="Succeeded, Failed or Preempted.")
    reason: Optional[str] = Field(None, description="CamelCase cause of a failure, e.g. DataError.")
    message: Optional[str] = Field(None, description="What happened, in words a person can act on.")
    rank: Optional[int] = Field(None, description="The global rank that failed first.")
    steps: Optional[int] = Field(None, description="Optimizer steps completed.")
    final_loss: Optional[float] = Field(None, description="Training loss at the last step.")
    final_eval_loss: Optional[float] = Field(None, description="Validation loss at the end.")
    eval_exact_match: Optional[float] = Field(None, description="Greedy exact match on held-out examples (0..1).")
    output_path: Optional[str] = Field(None, description="The output directory (inside the pod).")
    manifest_sha256: Optional[str] = Field(None, description="sha256 of the output's manifest.json.")

    def to_text(self, limit: int = TERMINATION_MESSAGE_LIMIT) -> str:
        """The JSON text, at most `limit` bytes: a long message is cut (marked with an ellipsis), never lost."""
        doc = self.model_dump(by_alias=True, exclude_none=True, mode="json")
        text = json.dumps(doc)
        if len(text.encode("utf-8")) <= limit or not doc.get("message"):
            return text
        base = len(json.dumps(doc | {"message": ""}).encode("utf-8"))
        room = max(0, limit - base - 16)  # JSON escapes can grow a character: trim until it fits
        msg = doc["message"]
        while room > 0:
            cut = msg[:room] + " …"
            text = json.dumps(doc | {"message": cut})
            if len(text.encode("utf-8")) <= limit:
                return text
            room -= max(1, room // 10)
        return json.dumps(doc | {"message": "…"})

    @classmethod
    def from_text(cls, text: str) -> Optional["TerminationMessage"]:
        """Parse a termination message; None when it is absent or not ours (e.g. a log tail after a crash)."""
        try:
            doc = json.loads(text or "")
            return cls.model_validate(doc) if isinstance(doc, dict) and "outcome" in doc else None
        except ValueError:
            return None


# --- the trainer's Prometheus metrics: names, help and labels (read by the operator, dashboard and alerts) ---

METRIC_PREFIX = "finetune_"
TRAINER_LABELS = ("namespace", "job_name", "rank")
TRAINER_GAUGES = {
    "step": "Optimizer steps completed.",
    "total_steps": "Optimizer steps planned.",
    "epoch": "Fractional epoch.",
    "train_loss": "Latest training loss (token-weighted mean over the step).",
    "eval_loss": "Latest validation loss.",
    "learning_rate": "Current learning rate.",
    "grad_norm": "Global gradient norm before clipping.",
    "tokens_per_second": "Non-padding tokens processed per second, all processes.",
    "trainable_tokens_per_second": "Tokens with a training target per second, all processes.",
    "mfu_ratio": "Model FLOPs utilisation (0..1) per GPU, benchmark.md counting (CUDA only).",
    "eta_seconds": "Estimated seconds to the end of training.",
    "last_checkpoint_step": "Step of the newest checkpoint (the start step before the first: work since is unsaved).",
    "last_checkpoint_timestamp_seconds": "Unix time the newest checkpoint was saved (or the run started).",
    "checkpoint_interval_steps": "spec.output.saveEverySteps: a checkpoint is due every this many steps.",
    "start_time_seconds": "Unix time the run started.",
}
TRAINER_COUNTERS = {
    "checkpoints_saved": "Checkpoints written.",
    "tokens_processed": "Non-padding tokens processed, all processes.",
}
TRAINER_GPU_GAUGES = {
    "allocated": "Bytes held by tensors on the rank's GPU.",
    "reserved": "Bytes reserved on the rank's GPU by the caching allocator (held by tensors or free for reuse).",
}


def gauge_name(short: str) -> str:
    """The exported name of a trainer gauge (`step` -> `finetune_step`)."""
    if short not in TRAINER_GAUGES:
        raise KeyError(f"unknown trainer gauge {short!r}")
    return METRIC_PREFIX + short


def counter_name(short: str) -> str:
    """The exported name of a trainer counter, with Prometheus' `_total` suffix."""
    if short not in TRAINER_COUNTERS:
        raise KeyError(f"unknown trainer counter {short!r}")
    return f"{METRIC_PREFIX}{short}_total"


def gpu_gauge_name(short: str) -> str:
    """The exported name of a per-rank GPU memory gauge."""
    if short not in TRAINER_GPU_GAUGES:
        raise KeyError(f"unknown GPU gauge {short!r}")
    return f"{METRIC_PREFIX}gpu_memory_{short}_bytes"
