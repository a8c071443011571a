"""The trainer's config file: the validated job plus the launch plan decided outside the trainer's loop.

This is the operator -> trainer contract (design.md): the operator writes it into a ConfigMap, `finetune run`
writes it into a temp file; the trainer reads it and never the Kubernetes API. Paths here are already
resolved (relative spec paths against the spec file locally, against the volume mounts in a pod), so the
trainer does not need to know where it runs.

The `LaunchPlan` is computed by one function (`finetune_plan.plan_launch`) wherever its facts are known:
`finetune run` and `finetune plan` know the machine and the model and fill it whole; the operator knows
neither the GPU nor the model's size, so it fills what it decides (processes, device, and the strategy
when the spec fixes it) and leaves the rest None, which the pod's launcher completes with the same function
before any worker starts. The trainer obeys the plan; it never re-derives it.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .base import SpecModel
from .job import FineTuneJob

ResolvedStrategy = Literal["single", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]


class DiskPlan(SpecModel):
    """Bytes the run writes to its output volume (an estimate from the model's shape and the method)."""

    checkpoint_bytes: int = Field(..., ge=0, description="One resumable checkpoint, all ranks together.")
    checkpoint_bytes_per_rank: int = Field(..., ge=0, description="The largest share one rank writes.")
    checkpoint_parts: dict[str, int] = Field(default_factory=dict,
                                             description="A checkpoint's bytes by part (weights, optimizer).")
    output_bytes: int = Field(..., ge=0, description="The final output (adapter or weights, merged model).")
    peak_bytes: int = Field(..., ge=0, description="The most the output directory holds at once.")


class LaunchPlan(SpecModel):
    """How the run executes: processes, strategy, batch shape, activation checkpointing, precision, memory, disk.

    A None field is not decided yet (the operator cannot see the GPU or the model): the pod's launcher
    completes it with the same planning function before training starts.
    """

    nodes: int = Field(1, ge=1, description="Nodes (pods) in the run.")
    nproc_per_node: int = Field(1, ge=1, description="Processes per node (one per GPU, or CPU processes).")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the processes compute.")
    strategy: Optional[ResolvedStrategy] = Field(None, description="The strategy after resolving `auto`.")
    micro_batch: Optional[int] = Field(None, ge=1, description="Examples (or rows) per process per forward.")
    gradient_accumulation: Optional[int] = Field(None, ge=1, description="Micro-batches per optimizer step.")
    checkpointing: Optional[bool] = Field(None, description="Activation checkpointing on or off.")
    checkpoint_layers: Optional[int] = Field(None, ge=0,
                                             description="With checkpointing: the first this many blocks (None: all).")
    layers: Optional[int] = Field(None, ge=1, description="The model's decoder blocks (when its config was read).")
    reshard_after_forward: bool = Field(True, description="FSDP: full shard (True) or shard-grad-op (False).")
    precision: Optional[str] = Field(None, description="Weights and compute, e.g. `bf16`, `fp32 master + bf16`.")
    gpu_memory_bytes: Optional[int] = Field(None, ge=0, description="Memory per GPU the plan was made for.")
    memory_gib: Optional[dict[str, float]] = Field(None, description="Estimated peak per GPU by part (GiB).")
    disk: Optional[DiskPlan] = Field(None, description="Bytes written to the output volume.")

    @property
    def world_size(self) -> int:
        """Processes in the whole run."""
        return self.nodes * self.nproc_per_node

    @property
    def global_batch(self) -> Optional[int]:
        """Examples (or packed rows) per optimizer step."""
        if self.micro_batch is None or self.gradient_accumulation is None:
            return None
        return self.micro_batch * self.gradient_accumulation * self.world_size

    @property
    def complete(self) -> bool:
        """Whether every decision the trainer needs is made."""
        return None not in (self.strategy, self.micro_batch, self.gradient_accumulation, self.checkpointing)


class Rendezvous(SpecModel):
    """Where the nodes of a multi-node run meet (node rank 0's stable hostname)."""

    host: str = Field(..., description="Node rank 0's address (the headless Service's pod hostname).")
    port: int = Field(29500, ge=1, le=65535, description="Its rendezvous port.")


class TrainerConfig(SpecModel):
    """Everything one trainer process needs to know."""

    job: FineTuneJob = Field(..., description="The validated FineTuneJob.")
    model_path: Optional[str] = Field(None, description="Resolved directory of spec.model.path (None for hub ids).")
    dataset_paths: Optional[list[str]] = Field(None, description="Resolved spec.dataset.paths.")
    validation_paths: Optional[list[str]] = Field(None, description="Resolved spec.dataset.validationPaths.")
    output_dir: str = Field(..., description="Resolved spec.output.path.")
    plan: LaunchPlan = Field(default_factory=LaunchPlan, description="The launch plan (see LaunchPlan).")
    rendezvous: Optional[Rendezvous] = Field(None, description="Multi-node runs: where the nodes meet.")
    metrics_port: Optional[int] = Field(None, ge=1, le=65535, description="Rank 0 serves Prometheus metrics here.")
    termination_log: Optional[str] = Field(
        None, description="File the final summary JSON is written to (Kubernetes' /dev/termination-log)."
    )

    def to_json(self) -> str:
        """The file's text. Only the fields the user (or the planner) set are written, so the reader sees which
        spec fields were given and which are defaults — some rules depend on it (an explicit globalBatchSize)."""
        return self.model_dump_json(by_alias=True, exclude_unset=True)

    @property
    def device(self) -> str:
        """`cpu` or `cuda`."""
        return self.plan.device

    @property
    def strategy(self) -> str:
        """The resolved strategy (the plan must be complete)."""
        if self.plan.strategy is None:
            raise ValueError("the launch plan has no strategy yet (finetune_plan.plan_launch completes it)")
        return self.plan.strategy

    @property
    def nodes(self) -> int:
        """Nodes (pods) in the run."""
        return self.plan.nodes

    @property
    def nproc_per_node(self) -> int:
        """Processes per node."""
        return self.plan.nproc_per_node

    @property
    def world_size(self) -> int:
        """Processes in the whole run."""
        return self.plan.world_size
