"""The trainer's Prometheus metrics: training progress from rank 0, GPU memory from every rank.

Names follow Prometheus conventions (`finetune_` prefix, base units in names, `_total` for counters); labels
identify the job (namespace, job_name) and the rank. The operator reads these for `status.progress`, the
chart's PodMonitor scrapes them, and the chart's dashboard and alert rules query them
through the names in finetune_api.contract, the one place both sides read them.

Who serves what:
- Global rank 0 registers the training gauges and counters (step, loss, tokens/s, ...). Other ranks' values
  are the same numbers (the recipe all-reduces them), so exporting them again would only duplicate series.
- Every node's local rank 0 serves an endpoint, so every trainer pod the PodMonitor finds is `up`; it exports
  the GPU memory of each rank on its node, gathered with one small all_gather per step.
- A gauge appears at its first value: no `finetune_eval_loss 0` before the first evaluation, no MFU on a CPU.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from finetune_api.contract import (TRAINER_COUNTERS, TRAINER_GAUGES, TRAINER_GPU_GAUGES, TRAINER_LABELS, counter_name,
                                   gauge_name, gpu_gauge_name)

LABELS = TRAINER_LABELS
GAUGES = TRAINER_GAUGES
COUNTERS = TRAINER_COUNTERS
GPU_GAUGES = TRAINER_GPU_GAUGES


class TrainerMetrics:
    """The metrics of one trainer process; `serve()` exposes them over HTTP.

    Args:
        namespace: the FineTuneJob's namespace ("local" when empty: `finetune run`).
        name: the FineTuneJob's name.
        rank: this process's global rank.
        node_rank: this process's node (torchrun's GROUP_RANK; default from the environment).
    """

    def __init__(self, namespace: str, name: str, rank: int, node_rank: Optional[int] = None):
        self.registry = CollectorRegistry()
        self.rank = rank
        self.node_rank = int(os.environ.get("GROUP_RANK", 0)) if node_rank is None else node_rank
        self._job = {"namespace": namespace or "local", "job_name": name}
        mine = self._job | {"rank": str(rank)}
        # Training numbers are global (all-reduced): only rank 0 registers them. Other ranks' metric objects
        # exist (the recipe calls them on every rank) but belong to no registry, so nothing serves them.
        reg = self.registry if rank == 0 else None
        self._gauges = {k: Gauge(gauge_name(k), doc, LABELS, registry=reg) for k, doc in GAUGES.items()}
        self._mine = mine
        self._checkpoint_known = False
        self.checkpoints = Counter(counter_name("checkpoints_saved"), COUNTERS["checkpoints_saved"],
                                   LABELS, registry=reg).labels(**mine)
        self.tokens = Counter(counter_name("tokens_processed"), COUNTERS["tokens_processed"],
                              LABELS, registry=reg).labels(**mine)
        self._gpu = {k: Gauge(gpu_gauge_name(k), doc, LABELS, registry=self.registry)
                     for k, doc in GPU_GAUGES.items()}

    def serve(self, port: Optional[int]) -> None:
        """Start the HTTP endpoint on `port` (all interfaces: the pod's IP is scraped); None or 0: don't."""
        if port:
            start_http_server(port, registry=self.registry)

    def set(self, **values: Optional[float]) -> None:
        """Set gauges by short name (`step=`, `train_loss=`, ...), skipping None.

        Setting `last_checkpoint_step` also stamps `last_checkpoint_timestamp_seconds` with the time now. The
        first `step` (0, or the step a resumed run starts from) also counts as the newest checkpoint: the
        work after it is what a crash would lose.

        Raises:
            KeyError: an unknown name (a typo would otherwise vanish silently).
        """
        if "step" in values and values["step"] is not None and not self._checkpoint_known:
            values = {"last_checkpoint_step": values["step"]} | values
        for k, v in values.items():
            if v is None:
                continue
            self._gauges[k].labels(**self._mine).set(v)
            if k == "last_checkpoint_step":
                self._checkpoint_known = True
                self._gauges["last_checkpoint_timestamp_seconds"].labels(**self._mine).set(time.time())

    def gpu_memory(self) -> None:
        """Refresh the per-rank GPU memory gauges (no-op on CPU).

        In a process group this is a collective (an all_gather of two numbers): call it on every rank.
        """
        import torch

        if torch.cuda.is_available():
            self.record_gpu_memory(float(torch.cuda.memory_allocated()), float(torch.cuda.memory_reserved()))

    def record_gpu_memory(self, allocated: float, reserved: float) -> None:
        """Gather (node, allocated, reserved) from every rank and keep the rows of this process's node.

        A collective when a process group is initialised: every rank must call it, in the same order.
        """
        import torch
        import torch.distributed as dist

        rows: Iterable[tuple[int, int, float, float]] = [(self.rank, self.node_rank, allocated, reserved)]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # an FSDP2 / DeepSpeed run on one GPU initialises its own group, possibly "cuda:nccl" or
            # "cpu:gloo,cuda:nccl": gather on the GPU whenever NCCL is among the backends
            device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in str(dist.get_backend()) \
                else "cpu"
            t = torch.tensor([self.rank, self.node_rank, allocated, reserved], dtype=torch.float64, device=device)
            gathered = [torch.empty_like(t) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, t)
            rows = [(int(r), int(n), a, m) for r, n, a, m in (g.tolist() for g in gathered)]
        for rank, allocated_b, reserved_b in node_rows(rows, self.node_rank):
            labels = self._job | {"rank": str(rank)}
            self._gpu["allocated"].labels(**labels).set(allocated_b)
            self._gpu["reserved"].labels(**labels).set(reserved_b)


def node_rows(rows: Iterable[tuple[int, int, float, float]], node_rank: int) -> list[tuple[int, float, float]]:
    """(rank, allocated, reserved) of the ranks on `node_rank`, from every rank's (rank, node, alloc, reserved)."""
    return sorted((r, a, m) for r, n, a, m in rows if n == node_rank)
