"""How long and how hard to train (`spec.training`) and across how many processes (`spec.distributed`)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, NonNegativeInt, PositiveInt

from .base import SpecModel
from .kube_types import EXTENDED_RESOURCE, QUANTITY

Auto = Literal["auto"]
StrategyType = Literal["auto", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]


class TrainingSpec(SpecModel):
    """Optimisation schedule and batch shape."""

    epochs: Optional[float] = Field(
        None, gt=0, le=1000,
        description="Passes over the training data. Set `epochs` or `maxSteps`, not both; when neither is "
        "set, one epoch.",
    )
    max_steps: Optional[int] = Field(
        None, ge=1, le=10_000_000,
        description="Optimizer steps to run. Set `epochs` or `maxSteps`, not both; when neither is set, one epoch."
    )
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW decoupled weight decay.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.03, ge=0, le=0.5, description="Fraction of the steps spent warming up linearly.")
    max_grad_norm: float = Field(1.0, ge=0, le=1e6, description="Clip gradients to this global norm; 0 disables.")
    micro_batch_size: Union[Auto, PositiveInt] = Field(
        "auto",
        description="Examples (or packed rows) per process per forward pass. `auto`: the largest that fits "
        "the memory plan (1 on CPU).",
    )
    gradient_accumulation: Union[Auto, PositiveInt] = Field(
        "auto",
        description="Micro-batches accumulated per optimizer step. `auto`: whatever reaches "
        "`globalBatchSize` with the chosen micro-batch and process count.",
    )
    global_batch_size: int = Field(
        16, ge=1, le=1_000_000,
        description="Examples (or packed rows) per optimizer step across all processes; used when micro-batch "
        "or accumulation is `auto`.",
    )
    gradient_checkpointing: Union[Auto, bool] = Field(
        "auto", description="Recompute activations in backward to save memory. `auto`: only when needed to fit."
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seed for data order, the validation split and init.")
    eval_every_steps: Optional[int] = Field(
        None, ge=1, description="Evaluate on the validation data every N steps (and always at the end)."
    )
    log_every_steps: int = Field(1, ge=1, le=100000, description="Log metrics every N optimizer steps.")


class DistributedSpec(SpecModel):
    """Process layout: nodes x GPUs per node, and how model state is shared between them."""

    nodes: int = Field(1, ge=1, le=512, description="Pods (one per node), each running one process per GPU.")
    gpus_per_node: Union[Auto, NonNegativeInt] = Field(
        "auto",
        description="Processes (one per GPU) per node. `auto`: locally every visible GPU, or one CPU process "
        "when none is visible; in a cluster 1. 0 means a CPU-only run.",
    )
    strategy: StrategyType = Field(
        "auto",
        description="ddp: full replica per GPU; fsdp: FSDP2 fully sharded; deepspeed-zero2/zero3: DeepSpeed "
        "ZeRO stage 2/3. `auto`: the smallest sharding the memory plan says fits (full fine-tuning on more "
        "than one GPU is sharded).",
    )
    cpu_offload: bool = Field(False, description="Offload optimizer state (and ZeRO-3 parameters) to CPU memory.")
    timeout_seconds: int = Field(
        1800, ge=10, le=86400,
        description="How long a process waits for the others at any collective (gradient sync, barrier, "
        "checkpoint) before the run fails with a message naming the timeout. Long enough for rank 0 to write "
        "a large output alone; shorter finds a hung peer sooner.",
    )


class ResourcesSpec(SpecModel):
    """What each trainer pod requests from the cluster (ignored by local runs, which use the machine)."""

    cpu: str = Field("4", max_length=32, pattern=QUANTITY,
                     description="CPU request per pod (a Kubernetes quantity: 4, 500m).")
    memory: str = Field("32Gi", max_length=32, pattern=QUANTITY,
                        description="Memory request and limit per pod (a Kubernetes quantity: 32Gi).")
    shared_memory: str = Field("16Gi", max_length=32, pattern=QUANTITY,
                               description="Size of the in-memory /dev/shm per pod (a Kubernetes quantity: 16Gi).")
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", max_length=253, pattern=EXTENDED_RESOURCE,
        description="Extended resource name of a GPU on your nodes."
    )
