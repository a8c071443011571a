"""What fits on one node: every method x strategy for a model, with GPU, host and disk figures, from the same planner.

Why: the question users of this field ask first is "what can I fine-tune on this node, and how" (the seeds ask it
of 2xH200 for 7B-120B models); answering it cell by cell with `finetune plan job.yaml` means writing a spec per
cell. `node_table` writes those specs itself (a FineTuneJob per method and strategy), plans each with
`plan_launch` - the function the trainer obeys - and adds what a GPU plan does not say: the host memory per node
(host.py), whether the model can load at all (except where FSDP2 loads into its shards, the trainer loads it whole
onto each GPU before sharding), and the disk. A cell either fits, or says which limit it breaks and by how much.

Node presets name the GPU memory CUDA reports (not the marketed figure) and an assumed host memory, said in
`Node.assumed`; `--gpu-memory`, `--gpus` and `--host-memory` override them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune_api.contract import UserError
from finetune_api.job import FineTuneJob

from .host import HostEstimate, host_estimate
from .launch_plan import Machine, plan_launch, workload
from .memory import GiB, DoesNotFit, ModelShape

H100_BYTES = int(79.2 * GiB)  # an H100 80GB: what torch.cuda reports (bench/results/*h100*)
H200_BYTES = 140 * GiB  # an H200 141GB: torch.cuda reports 140 GiB (bench/results/multi-gpu-h200-*: "2 GPU(s) x 140")


@dataclass(frozen=True)
class Node:
    """One node: its GPUs, the memory of each, and its host memory."""

    name: str
    gpus: int
    gpu_bytes: int
    host_bytes: int
    assumed: str = ""


NODES: dict[str, Node] = {n.name.lower(): n for n in (
    Node("1xH100", 1, H100_BYTES, 128 * GiB, "an 80GB H100 with 128 GiB of host memory (a one-GPU cloud instance)"),
    Node("8xH100", 8, H100_BYTES, 2048 * GiB, "a DGX H100: eight 80GB H100s, 2 TiB of host memory"),
    Node("1xH200", 1, H200_BYTES, 128 * GiB, "a 141GB H200 with 128 GiB of host memory (a one-GPU cloud instance)"),
    Node("2xH200", 2, H200_BYTES, 256 * GiB,
         "two 141GB H200s (140 GiB as CUDA reports it) with 256 GiB of host memory - the 2xH200 machine the "
         "benchmarks ran on; 2-GPU cloud instances range 256-512 GiB, a whole DGX H200 (8 GPUs) has 2 TiB"),
    Node("8xH200", 8, H200_BYTES, 2048 * GiB, "a DGX H200: eight 141GB H200s, 2 TiB of host memory"),
)}

# Cells of the table: (method, strategy, cpuOffload). QLoRA runs replicated: one 4-bit base per GPU.
CELLS: tuple[tuple[str, str, bool], ...] = (
    ("lora", "ddp", False), ("lora", "fsdp", False), ("lora", "deepspeed-zero3", False),
    ("lora", "fsdp", True), ("lora", "deepspeed-zero3", True),
    ("qlora", "ddp", False),
    ("full", "ddp", False), ("full", "fsdp", False), ("full", "deepspeed-zero2", False),
    ("full", "deepspeed-zero3", False), ("full", "fsdp", True), ("full", "deepspeed-zero3", True),
    ("spectrum", "fsdp", False), ("spectrum", "deepspeed-zero3", False),
)


@dataclass
class Cell:
    """One method x strategy on the node: the plan's figures, and why it does not fit when it does not."""

    method: str
    strategy: str
    offload: bool
    fits: bool
    gpu_gib: Optional[float] = None
    micro: Optional[int] = None
    accumulation: Optional[int] = None
    checkpointing: str = ""
    host_gib: Optional[float] = None
    host_phase: str = ""
    gpu_load_gib: Optional[float] = None
    checkpoint_gib: Optional[float] = None
    output_gib: Optional[float] = None
    why: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.strategy + ("+offload" if self.offload else "")


def node_for(name: str) -> Node:
    """The preset called `name` (case-insensitive).

    Raises:
        UserError: unknown name (lists the presets).
    """
    node = NODES.get(name.lower())
    if node is None:
        raise UserError(f"--node {name}: unknown node; presets: {', '.join(n.name for n in NODES.values())} "
                        "(or give --gpus and --gpu-memory)")
    return node


def cell_job(model: str, method: str, strategy: str, offload: bool, gpus: int, max_length: int,
             global_batch: int, batch: Optional[tuple[int, int]] = None) -> FineTuneJob:
    """The FineTuneJob of one cell (a hub id, or a path for a model read from its folder).

    Args:
        batch: (micro-batch, accumulation) to fix, e.g. a measured run's; None lets the plan choose.
    """
    source = {"hubId": model} if "/" in model and not model.startswith(("/", ".")) else {"path": model}
    training: dict = {"globalBatchSize": global_batch}
    if batch is not None:
        training = {"microBatchSize": batch[0], "gradientAccumulation": batch[1],
                    "globalBatchSize": batch[0] * batch[1] * gpus}
    return FineTuneJob.model_validate({
        "apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "plan"},
        "spec": {"model": source, "dataset": {"paths": ["d.jsonl"], "format": "messages", "maxLength": max_length},
                 "method": {"type": method}, "training": training,
                 "distributed": {"gpusPerNode": gpus, "strategy": strategy, "cpuOffload": offload},
                 "output": {"path": "out"}}})


def plan_cell(model: str, shape: ModelShape, node: Node, method: str, strategy: str, offload: bool,
              max_length: int = 2048, global_batch: int = 16, batch: Optional[tuple[int, int]] = None) -> Cell:
    """Plan one cell on `node`; the cell says why when the GPU, the load or the host cannot hold it."""
    cell = Cell(method, strategy, offload, fits=False)
    job = cell_job(model, method, strategy, offload, node.gpus, max_length, global_batch, batch)
    machine = Machine(device="cuda", nodes=1, nproc_per_node=node.gpus, gpu_bytes=node.gpu_bytes)
    resolved = strategy if node.gpus > 1 or strategy != "ddp" else "single"
    host: HostEstimate = host_estimate(shape, workload(job, resolved, machine), node.gpus)
    cell.host_gib, cell.host_phase = host.peak / GiB, host.dominant
    cell.gpu_load_gib = host.gpu_load / GiB
    try:
        plan = plan_launch(job, machine, shape)
    except DoesNotFit as e:
        need = str(e).split(" needs ", 1)[-1].split(" GiB per GPU", 1)[0]
        cell.why.append(f"GPU: needs {need} GiB per GPU even at micro-batch 1 with checkpointing")
    else:
        cell.gpu_gib = plan.memory_gib["total"] if plan.memory_gib else None
        cell.micro, cell.accumulation = plan.micro_batch, plan.gradient_accumulation
        k = plan.checkpoint_layers
        cell.checkpointing = ("off" if not plan.checkpointing else
                              "all" if k is None or k >= shape.layers else f"{k}/{shape.layers}")
        if plan.disk:
            cell.checkpoint_gib = plan.disk.checkpoint_bytes / GiB
            cell.output_gib = plan.disk.output_bytes / GiB
    if host.gpu_load + GiB > node.gpu_bytes:
        cell.why.append(f"load: {'its shard' if host.sharded_load else 'the whole model'} "
                        f"({host.gpu_load / GiB:.0f} GiB) goes onto each GPU"
                        + ("" if host.sharded_load else " before it is sharded"))
    if host.peak > node.host_bytes:
        cell.why.append(f"host: needs {host.peak / GiB:.0f} GiB ({host.dominant}) of {node.host_bytes / GiB:.0f}")
    cell.fits = not cell.why
    return cell


def node_table(model: str, shape: ModelShape, node: Node, max_length: int = 2048, global_batch: int = 16,
               cells: tuple[tuple[str, str, bool], ...] = CELLS) -> list[Cell]:
    """Every cell of `cells` for `model` on `node` (single-GPU nodes skip the sharded-only strategies)."""
    out = []
    for method, strategy, offload in cells:
        out.append(plan_cell(model, shape, node, method, strategy, offload, max_length, global_batch))
    return out
