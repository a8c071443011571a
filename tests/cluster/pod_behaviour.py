"""How the trainer pods of a scenario behave, said as labels and annotations on the FineTuneJob (its pods inherit them).

Why: a scenario says what it needs of the trainer - it trains for a long time, it fails with a data error, it
finishes - and not who plays it. On kwok (the stages controlplane.py loads: kwok's fast pod lifecycle and its chaos
stage) the labels and annotations below *are* the kubelet; on a real pod runner the same helpers can return what
the real trainer image needs to behave so, and the scenarios stay unchanged. (The same names and signatures as the
operator branch's helpers, so scenarios written against either run on both.)

`kubelet_reports(...)` writes a pod's status directly, as a kubelet would once the trainer ended; only tests that
say so use it (to leave a termination message, which kwok's fast stage cannot).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field

from controlplane import CHAOS_FAIL_LABEL, ControlPlane

CHAOS = CHAOS_FAIL_LABEL


@dataclass(frozen=True)
class Behaviour:
    """Labels and annotations to put on a FineTuneJob; its Job's pods inherit them."""

    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)

    def on(self, ftj: dict) -> dict:
        """A copy of the FineTuneJob manifest `ftj` whose pods behave so."""
        out = copy.deepcopy(ftj)
        meta = out.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **self.labels}
        meta["annotations"] = {**(meta.get("annotations") or {}), **self.annotations}
        return out


def runs_long() -> Behaviour:
    """The trainer trains for longer than any test: its pods stay Running (kwok's chaos stage, 10 minutes away)."""
    return Behaviour(labels={CHAOS: "true"}, annotations={f"{CHAOS}/delay": "10m", f"{CHAOS}/jitter-delay": "10m"})


def finishes() -> Behaviour:
    """The trainer finishes with exit 0 as soon as it runs (kwok's fast stage completes a Job's pods)."""
    return Behaviour()


def fails(exit_code: int = 1, reason: str = "Error", message: str = "", after: str = "100ms") -> Behaviour:
    """The trainer fails after `after` with `exit_code`, leaving `message` (e.g. a TerminationMessage's JSON)."""
    quoted = "'" + message + "'" if message.startswith("{") else message  # kwok's template reads it as YAML
    return Behaviour(labels={CHAOS: "true"},
                     annotations={f"{CHAOS}/exit-code": str(exit_code), f"{CHAOS}/reason": reason,
                                  f"{CHAOS}/message": quoted, f"{CHAOS}/delay": after, f"{CHAOS}/jitter-delay": "0s"})


def kubelet_reports(cp: ControlPlane, namespace: str, pod: dict, *, exit_code: int, reason: str = "Error",
                    message: str = "") -> None:
    """Write `pod`'s status as its kubelet would once the trainer container ended with `exit_code`."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or [
        {"name": "trainer", "image": "i", "ready": False, "restartCount": 0}]
    cs = statuses[0]
    now = _now()
    running = ((cs.get("state") or {}).get("running") or {}).get("startedAt")
    term = {"exitCode": exit_code, "reason": reason, "message": message, "finishedAt": now,
            "startedAt": running or now}
    status = {"phase": "Succeeded" if exit_code == 0 else "Failed",
              "containerStatuses": [cs | {"ready": False, "started": False, "state": {"terminated": term}}]}
    res = cp.kubectl("patch", "pod", pod["metadata"]["name"], "-n", namespace, "--subresource=status",
                     "--type=merge", "-p", json.dumps({"status": status}))
    assert res.returncode == 0, res.stderr


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
