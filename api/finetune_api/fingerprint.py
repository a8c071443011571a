"""The fingerprint of a run: the spec fields that shape what it trains, so a folder's earlier run can be recognised.

Why: a checkpoint resumes *the same* run. Resuming it under other data, another batch size or another LoRA rank
silently continued the old weights (or died on a tensor-size mismatch). The trainer stores these fields in
each checkpoint and in the manifest, and refuses to resume or overwrite under a spec whose fields differ,
naming each one. Fields that only say how long or where to run are left out, so a run may be resumed with
more steps, more processes, another output layout or another evaluation interval.
"""

from __future__ import annotations

import hashlib
import json

from .job import FineTuneJobSpec

# dotted paths into spec.to_wire(); every field under a listed prefix counts unless excluded below
SHAPING = ("model", "dataset", "method", "objective", "training")
NOT_SHAPING = ("model.volume", "dataset.volume", "training.maxSteps", "training.epochs", "training.evalEverySteps",
               "training.logEverySteps", "training.microBatchSize", "training.gradientAccumulation",
               "training.gradientCheckpointing", "model.attnImplementation", "dataset.paddingFree")


def _flatten(doc, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out


def shaping_fields(spec: FineTuneJobSpec) -> dict:
    """{dotted field: value} of the fields that shape the run (defaults included)."""
    wire = spec.model_dump(by_alias=True, mode="json", exclude_none=True)
    flat = _flatten({k: wire[k] for k in SHAPING if k in wire})
    return {k: v for k, v in sorted(flat.items()) if not any(k == n or k.startswith(n + ".") for n in NOT_SHAPING)}


def fingerprint(spec: FineTuneJobSpec) -> str:
    """A short hash of `shaping_fields(spec)`."""
    text = json.dumps(shaping_fields(spec), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def differences(recorded: dict, spec: FineTuneJobSpec) -> list[str]:
    """Human lines `spec.<field>: was X, now Y` between a recorded `shaping_fields` and `spec`'s."""
    now = shaping_fields(spec)
    keys = sorted(set(recorded) | set(now))
    return [f"spec.{k}: was {json.dumps(recorded.get(k))}, now {json.dumps(now.get(k))}"
            for k in keys if recorded.get(k) != now.get(k)]
