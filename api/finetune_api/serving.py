"""`spec.serving`: when a finished fine-tune counts as ready to serve, and the verdict both sides compute the same way.

Why here: a run that trained without error can still be worse than the base on held-out data; users of this field
check a held-out loss or a task metric before they put an adapter behind a server. The trainer already computes
both (token-weighted validation loss, greedy exact match on held-out examples); this module lets the spec say the
threshold, and `gate_verdict` is the one function that turns the run's metrics into the `ReadyToServe` condition:
the operator calls it on `status.result`, the trainer records it in manifest.json, `finetune run` prints it.
No gate means ready as soon as the run succeeded.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from pydantic import Field

from .base import SpecModel
from .status import Result

READY_TO_SERVE = "ReadyToServe"  # the condition type


class ServingGate(SpecModel):
    """Thresholds on the end-of-run evaluation (held-out data) that an output must meet to be marked ready."""

    max_eval_loss: Optional[float] = Field(
        None, gt=0, le=100, description="Highest validation loss (token-weighted, at the end of training) that "
        "counts as ready.")
    min_exact_match: Optional[float] = Field(
        None, ge=0, le=1, description="Lowest greedy exact match on held-out examples (0..1, up to 64 examples; "
        "sft and cpt objectives) that counts as ready.")


class ServingSpec(SpecModel):
    """How the result is handed to serving."""

    gate: Optional[ServingGate] = Field(
        None, description="Mark the output ready to serve (condition ReadyToServe) only when the end-of-run "
        "evaluation meets these thresholds; needs validation data (spec.dataset.validationSplit or "
        "validationPaths). Without a gate a succeeded run is ready.")


class Verdict(NamedTuple):
    """The ReadyToServe condition's status, reason and message."""

    status: str
    reason: str
    message: str


def gate_verdict(gate: Optional[ServingGate], eval_loss: Optional[float],
                 exact_match: Optional[float]) -> Verdict:
    """Whether a succeeded run's output is ready to serve under `gate`.

    Args:
        gate: spec.serving.gate (None: no thresholds).
        eval_loss: the final validation loss (status.result.finalEvalLoss; manifest metrics final_eval_loss).
        exact_match: the held-out exact match, 0..1 (status.result.evalExactMatch; metrics eval_exact_match).

    Returns:
        ("True", "NoGate" | "GatePassed", ...) or ("False", "GateFailed" | "MetricMissing", ...); the message
        gives each figure against its threshold, and what to do when it fails.
    """
    if gate is None or (gate.max_eval_loss is None and gate.min_exact_match is None):
        return Verdict("True", "NoGate", "the run succeeded and spec.serving.gate sets no thresholds")
    checks: list[tuple[str, Optional[float], str, float, bool]] = []
    if gate.max_eval_loss is not None:
        checks.append(("eval loss", eval_loss, "<=", gate.max_eval_loss,
                       eval_loss is not None and eval_loss <= gate.max_eval_loss))
    if gate.min_exact_match is not None:
        checks.append(("exact match", exact_match, ">=", gate.min_exact_match,
                       exact_match is not None and exact_match >= gate.min_exact_match))
    missing = [name for name, value, *_ in checks if value is None]
    if missing:
        return Verdict("False", "MetricMissing",
                       f"spec.serving.gate needs the {' and '.join(missing)} of the end-of-run evaluation, which "
                       "the run did not report (no validation data, or no held-out example with a trained span)")
    said = "; ".join(f"{name} {value:.4g} {op} {limit:.4g}" if ok else f"{name} {value:.4g} is not {op} {limit:.4g}"
                     for name, value, op, limit, ok in checks)
    if all(ok for *_, ok in checks):
        return Verdict("True", "GatePassed", f"held-out evaluation meets spec.serving.gate: {said}")
    return Verdict("False", "GateFailed", f"held-out evaluation misses spec.serving.gate: {said}. The output is "
                   "kept; train longer or on more data, or loosen the gate in a new job")


def ready_to_serve(gate: Optional[ServingGate], result: Optional[Result]) -> Verdict:
    """The ReadyToServe condition of a Succeeded FineTuneJob from its `status.result` (what the operator calls)."""
    return gate_verdict(gate, result.final_eval_loss if result else None, result.eval_exact_match if result else None)
