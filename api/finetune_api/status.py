"""What the operator reports back (`status`): phase, Kubernetes-style conditions, progress and result.

The trainer never writes this; the operator fills it from the Job/Pod state, the rank-0 metrics endpoint
and the container termination message (see docs/design.md, "Contracts").
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import SpecModel

Phase = Literal["Pending", "Running", "Restarting", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]


class Condition(SpecModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(..., max_length=316, description="Condition type, e.g. Ready, Scheduled, Succeeded.")
    status: Literal["True", "False", "Unknown"] = Field(..., description="True, False or Unknown.")
    reason: str = Field(..., max_length=1024, description="CamelCase machine-readable reason.")
    message: str = Field("", max_length=32768, description="What happened, in words a person can act on.")
    last_transition_time: Optional[str] = Field(None, description="When status last changed (RFC 3339).")
    observed_generation: Optional[int] = Field(None, ge=0, description="metadata.generation this was set for.")


class Progress(SpecModel):
    """Training progress read from the trainer's rank-0 metrics."""

    step: int = Field(0, ge=0, description="Optimizer steps done.")
    total_steps: Optional[int] = Field(None, ge=0, description="Optimizer steps planned.")
    percent: Optional[str] = Field(None, max_length=8, description="step / totalSteps, e.g. `42%`.")
    loss: Optional[float] = Field(None, description="Latest training loss.")
    eval_loss: Optional[float] = Field(None, description="Latest validation loss.")
    eta_seconds: Optional[float] = Field(None, ge=0, description="Estimated seconds to the end of training.")
    eta: Optional[str] = Field(None, max_length=16, description="etaSeconds for people, e.g. `1h02m`, `3m05s`, `42s` "
                               "(the ETA column of `kubectl get ftj`).")
    tokens_per_second: Optional[float] = Field(None, ge=0, description="Trainable tokens per second, all GPUs.")


class Result(SpecModel):
    """What the run produced, from the trainer's termination message."""

    output_path: Optional[str] = Field(None, description="Directory holding the adapter/weights and manifest.json.")
    manifest_sha256: Optional[str] = Field(None, description="sha256 of manifest.json (which lists every file's).")
    steps: Optional[int] = Field(None, ge=0, description="Optimizer steps completed.")
    final_loss: Optional[float] = Field(None, description="Training loss at the last step.")
    final_eval_loss: Optional[float] = Field(None, description="Validation loss at the end.")
    eval_exact_match: Optional[float] = Field(
        None, ge=0, le=1, description="Greedy exact match on held-out examples at the end (0..1).")


class FineTuneJobStatus(SpecModel):
    """Observed state of a FineTuneJob."""

    phase: Optional[Phase] = Field(
        None, description="Pending, Running, Restarting (a trainer pod failed or was stopped; its replacement "
        "resumes from the newest checkpoint), Succeeded, Failed or Suspended.")
    conditions: list[Condition] = Field(default_factory=list, max_length=32, description="Detailed state.")
    observed_generation: Optional[int] = Field(None, ge=0, description="Generation last reconciled.")
    start_time: Optional[str] = Field(None, description="When the trainer pods were first created (RFC 3339).")
    completion_time: Optional[str] = Field(None, description="When the job succeeded or failed (RFC 3339).")
    restarts: Optional[int] = Field(
        None, ge=0, description="Times the trainer pods were started again after a failure, a preemption or a "
        "lost node; each restart resumes from the newest checkpoint.")
    progress: Optional[Progress] = Field(None, description="Training progress.")
    result: Optional[Result] = Field(None, description="Output of a finished run.")
    message: Optional[str] = Field(None, max_length=32768, description="Latest human-readable summary.")


def format_eta(seconds: float) -> str:
    """A duration for the ETA column: `1h02m`, `3m05s`, `42s` (whole seconds, rounded up)."""
    s = max(0, int(-(-seconds // 1)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
