"""The trainer's config file: the validated job plus the launch facts decided outside the trainer.

This is the operator -> trainer contract (design.md): the operator writes it into a ConfigMap, `finetune run`
writes it into a temp file; the trainer reads it and never the Kubernetes API. Paths here are already
resolved (relative spec paths against the spec file locally, against the volume mounts in a pod), so the
trainer does not need to know where it runs.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import SpecModel
from .job import FineTuneJob

ResolvedStrategy = Literal["single", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]


class TrainerConfig(SpecModel):
    """Everything one trainer process needs to know."""

    job: FineTuneJob = Field(..., description="The validated FineTuneJob.")
    model_path: Optional[str] = Field(None, description="Resolved directory of spec.model.path (None for hub ids).")
    dataset_paths: Optional[list[str]] = Field(None, description="Resolved spec.dataset.paths.")
    validation_paths: Optional[list[str]] = Field(None, description="Resolved spec.dataset.validationPaths.")
    output_dir: str = Field(..., description="Resolved spec.output.path.")
    nodes: int = Field(1, ge=1, description="Nodes (pods) in the run.")
    nproc_per_node: int = Field(1, ge=1, description="Processes per node.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the processes compute.")
    strategy: ResolvedStrategy = Field("single", description="The strategy after resolving `auto`.")
    metrics_port: Optional[int] = Field(None, ge=1, le=65535, description="Rank 0 serves Prometheus metrics here.")
    termination_log: Optional[str] = Field(
        None, description="File the final summary JSON is written to (Kubernetes' /dev/termination-log)."
    )

    @property
    def world_size(self) -> int:
        """Processes in the whole run."""
        return self.nodes * self.nproc_per_node
