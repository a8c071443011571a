"""How the trainer pods of a scenario behave, said as labels and annotations on the FineTuneJob (its pods inherit them).

Why: a scenario says what it needs of the trainer - it trains for a long time, it fails with a data error, it finishes
with a result, its container cannot start because a Secret is missing - and not who plays it. On kwok the labels and
annotations below *are* the kubelet (tests/cluster/kwok/pod-stages.yaml reads them); on a real pod runner the same
helpers can return what the real trainer image needs to behave so, and the scenarios stay unchanged.

`kubelet_reports(...)` writes a pod's status directly, as a kubelet would; only tests that say so use it (to fail one
pod of a group, or to leave a termination message where the stage cannot).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from dataclasses import dataclass, field

from controlplane import CHAOS_FAIL_LABEL, ControlPlane

HOLD = "finetune.test/hold"
RUN_FOR = "finetune.test/run-for"
TERMINATION_MESSAGE = "finetune.test/termination-message"
WAITING_REASON = "finetune.test/waiting-reason"
WAITING_MESSAGE = "finetune.test/waiting-message"
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
    """The trainer trains for longer than any test: its pods stay Running."""
    return Behaviour(labels={HOLD: "running"})


def finishes(after: str = "0s", result: dict | None = None) -> Behaviour:
    """The trainer finishes with exit 0 after `after`, leaving `result` (a TerminationMessage's fields) behind."""
    notes = {RUN_FOR: after}
    if result is not None:
        notes[TERMINATION_MESSAGE] = json.dumps({"outcome": "Succeeded", **result})
    return Behaviour(annotations=notes)


def fails(exit_code: int = 1, reason: str = "Error", message: str = "", after: str = "100ms") -> Behaviour:
    """The trainer fails after `after` with `exit_code`, leaving `message` (e.g. a TerminationMessage's JSON)."""
    return Behaviour(labels={CHAOS: "true"},
                     annotations={f"{CHAOS}/exit-code": str(exit_code), f"{CHAOS}/reason": reason,
                                  f"{CHAOS}/message": message, f"{CHAOS}/delay": after, f"{CHAOS}/jitter-delay": "0s"})


def waits(reason: str, message: str) -> Behaviour:
    """The container never starts: the kubelet reports `reason` (e.g. CreateContainerConfigError) and `message`."""
    return Behaviour(annotations={WAITING_REASON: reason, WAITING_MESSAGE: message})


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
