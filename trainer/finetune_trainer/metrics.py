"""The trainer's Prometheus metrics: served by rank 0 (per-rank GPU gauges by every rank's registry).

Names follow Prometheus conventions (`finetune_` prefix, units in names, `_total` for counters); labels
identify the job (namespace, name) and the rank. The operator reads these for `status.progress`, and
the chart's PodMonitor scrapes them for the Grafana dashboard.
"""

from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

_GAUGES = {
    "step": "Optimizer steps completed.",
    "total_steps": "Optimizer steps planned.",
    "epoch": "Fractional epoch.",
    "train_loss": "Latest training loss (token-weighted mean over the step).",
    "eval_loss": "Latest validation loss.",
    "learning_rate": "Current learning rate.",
    "grad_norm": "Global gradient norm before clipping.",
    "tokens_per_second": "Non-padding tokens processed per second, all processes.",
    "trainable_tokens_per_second": "Tokens with a training target per second, all processes.",
    "mfu_ratio": "Model FLOPs utilisation (0..1) per GPU, benchmark.md counting.",
    "eta_seconds": "Estimated seconds to the end of training.",
    "last_checkpoint_step": "Step of the newest checkpoint.",
    "start_time_seconds": "Unix time the run started.",
}


class TrainerMetrics:
    """Gauges and counters of one trainer process; `serve()` exposes them over HTTP."""

    def __init__(self, namespace: str, name: str, rank: int):
        self.registry = CollectorRegistry()
        labels = ["namespace", "job_name", "rank"]
        self._values = {"namespace": namespace or "local", "job_name": name, "rank": str(rank)}
        self.g = {k: Gauge(f"finetune_{k}", doc, labels, registry=self.registry).labels(**self._values)
                  for k, doc in _GAUGES.items()}
        self.gpu_allocated = Gauge("finetune_gpu_memory_allocated_bytes", "torch.cuda.memory_allocated",
                                   labels, registry=self.registry).labels(**self._values)
        self.gpu_reserved = Gauge("finetune_gpu_memory_reserved_bytes", "torch.cuda.memory_reserved",
                                  labels, registry=self.registry).labels(**self._values)
        self.checkpoints = Counter("finetune_checkpoints_saved", "Checkpoints written.",
                                   labels, registry=self.registry).labels(**self._values)
        self.tokens = Counter("finetune_tokens_processed", "Non-padding tokens processed.",
                              labels, registry=self.registry).labels(**self._values)

    def serve(self, port: Optional[int]) -> None:
        """Start the HTTP endpoint on `port` (all interfaces: the pod's IP is scraped)."""
        if port:
            start_http_server(port, registry=self.registry)

    def set(self, **values: Optional[float]) -> None:
        """Set gauges by short name, skipping None."""
        for k, v in values.items():
            if v is not None:
                self.g[k].set(v)

    def gpu_memory(self) -> None:
        """Refresh the GPU memory gauges (no-op on CPU)."""
        import torch

        if torch.cuda.is_available():
            self.gpu_allocated.set(torch.cuda.memory_allocated())
            self.gpu_reserved.set(torch.cuda.memory_reserved())
