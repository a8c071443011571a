"""Training progress for `status.progress`, read from the trainer's rank-0 Prometheus endpoint.

Why read metrics rather than logs or a sidecar: the trainer already serves them for Prometheus
(names in finetune_api.contract), so one source feeds both the dashboard and `kubectl get ftj`, and the
trainer needs no rights on the Kubernetes API. The parse is pure (`progress_from_metrics`); `fetch_progress` is
the one HTTP GET, with a short timeout: an unreachable pod means "no progress yet", never a failed reconcile.
"""

from __future__ import annotations

import math
import urllib.request
from typing import Optional

from prometheus_client.parser import text_string_to_metric_families

from finetune_api.contract import gauge_name
from finetune_api.status import Progress, format_eta

_FIELDS = ("step", "total_steps", "train_loss", "eval_loss", "eta_seconds", "tokens_per_second")
_WANTED = {gauge_name(k): k for k in _FIELDS}


def progress_from_metrics(text: str, rank: str = "0") -> Optional[Progress]:
    """Progress from Prometheus exposition text, taking the samples of `rank`; None if no step is reported."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _WANTED and sample.labels.get("rank", rank) == rank and math.isfinite(sample.value):
                values[_WANTED[sample.name]] = sample.value
    if "step" not in values:
        return None
    step = int(values["step"])
    total = int(values["total_steps"]) if values.get("total_steps") else None
    return Progress(
        step=step,
        total_steps=total,
        percent=f"{min(100, int(100 * step / total))}%" if total else None,
        loss=values.get("train_loss"),
        eval_loss=values.get("eval_loss"),
        eta_seconds=max(0.0, values["eta_seconds"]) if "eta_seconds" in values else None,
        eta=format_eta(values["eta_seconds"]) if "eta_seconds" in values else None,
        tokens_per_second=max(0.0, values["tokens_per_second"]) if "tokens_per_second" in values else None,
    )


def metrics_url(pod: dict, port: int) -> Optional[str]:
    """http://<pod IP>:<port>/metrics of a running pod, or None before it has an IP."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip or (pod.get("status") or {}).get("phase") != "Running":
        return None
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/metrics"


def fetch_progress(url: str, timeout: float = 1.0) -> Optional[Progress]:
    """GET `url` and parse it; None when the endpoint cannot be reached or reports nothing yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - http to a pod IP we own
            return progress_from_metrics(resp.read().decode("utf-8", errors="replace"))
    except (OSError, ValueError):
        return None
