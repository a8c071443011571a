"""Host memory per node, and what the trainer puts on each GPU while loading: the two limits a GPU plan misses.

Why: the GPU plan of a 70B full fine-tune with `cpuOffload` is 67 GiB per GPU, and says nothing of the ~1.1 TB of
fp32 master weights, gradients and AdamW state that offloading moves to the CPU; a node with 256 GiB of RAM is
killed by the kernel, not told. And how the trainer loads decides what a model needs before any step: FSDP2 with
LoRA or full fine-tuning of the architectures in SHARDED_LOAD_ARCHITECTURES loads straight into its shards (the
trainer's sharded_load.py: each rank reads its rows of the safetensors onto its GPU), but everything else loads the
plain way - each process materialises every weight on the CPU (`from_pretrained`), then moves the whole model to
its GPU before a strategy shards it - so there a model whose weights exceed one GPU does not start, however well it
would shard. This module counts both, per node, from the same shapes as memory.py:

    process      a fixed 4 GiB of host memory per process (Python, torch, CUDA context, data, buffers)
    load         plain loading: each process, every weight in its training dtype (fp32 for full/Spectrum on
                 FSDP/DDP, the model's dtype under DeepSpeed and for LoRA), all processes at once; loading into
                 shards: nothing beyond the memory-mapped files (page cache, reclaimable); QLoRA loads onto the GPU
                 shard by shard (one 5 GB shard per process)
    offloaded    with cpuOffload, the node's share (its processes / all processes) of: FSDP2 - the sharded
                 weights, fp32 gradients and AdamW's two moments; ZeRO-3 - the fp32 master, gradients and moments of
                 the trainable weights and the bf16 weights; ZeRO-2 - the fp32 master, gradients and moments
    checkpoint   while saving: one process or DDP - rank 0 gathers the trainable fp32 weights on the CPU and
                 safetensors serialises them into a buffer (twice 4 bytes per trainable parameter; AdamW's state
                 is written tensor by tensor); DeepSpeed - each rank writes its flat fp32 partitions, one at a
                 time (4 bytes per trainable parameter, the node's share); FSDP2 - DCP stages tensor by tensor
                 (nothing counted); nothing more when the state is already on the CPU (offloaded)
    merge        `mergeAdapter` after a sharded or QLoRA run: the bf16 base on the CPU (memory.merge_host_bytes)

Peak per node = process + max(load, offloaded + max(checkpoint, merge)). An estimate (not calibrated against a
measured host peak yet, unlike the GPU plan); page cache is reclaimable and not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .memory import GiB, ModelShape, Workload, merge_host_bytes, trainable_params

PROCESS_BYTES = 4 * GiB
# the model types FSDP2 loads straight into its shards: the trainer's sharded_load.ARCHITECTURES (a test pins the two
# equal: tests/unit/plan/test_node.py)
SHARDED_LOAD_ARCHITECTURES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
SHARD_BYTES = 5 * 10 ** 9  # the largest safetensors shard a loader holds at once (hub models use <= 5 GB)


@dataclass(frozen=True)
class HostEstimate:
    """Host bytes per node at the peak of each phase, and the bytes each GPU holds while the model loads."""

    process: float
    load: float
    offloaded: float
    checkpoint: float
    merge: float
    gpu_load: float  # per GPU while loading: the whole model in its training dtype (plain), or its shard
    sharded_load: bool = False

    @property
    def peak(self) -> float:
        return self.process + max(self.load, self.offloaded + max(self.checkpoint, self.merge))

    @property
    def dominant(self) -> str:
        """The phase that sets the peak, in words ("processes" when no phase adds anything)."""
        later = self.offloaded + max(self.checkpoint, self.merge)
        if self.load == later == 0:
            return "processes"
        if self.load >= later:
            return "loading"
        if self.offloaded and self.offloaded >= max(self.checkpoint, self.merge):
            return "offloaded state"
        return "merge" if self.merge > self.checkpoint else "checkpoint"


def weight_bytes(m: ModelShape, w: Workload) -> float:
    """Bytes of the whole model in the dtype it trains in (what loading materialises)."""
    n = m.params
    if w.method == "qlora":
        return 0.0  # never whole on the CPU: see host_estimate
    if w.method in ("full", "spectrum") and not w.strategy.startswith("deepspeed"):
        return 4.0 * n  # fp32 master weights (bf16 compute copies are made on the GPU)
    return 2.0 * n + (4.0 * trainable_params(m, w) if w.adapter else 0.0)


def loads_into_shards(m: ModelShape, w: Workload, dora: bool = False) -> bool:
    """Whether the trainer loads this run straight into its FSDP2 shards (trainer: sharded_load.applies)."""
    return (w.strategy == "fsdp" and w.method in ("lora", "full") and not dora
            and m.model_type in SHARDED_LOAD_ARCHITECTURES)


def host_estimate(m: ModelShape, w: Workload, nproc: int, merge: bool = False, dora: bool = False) -> HostEstimate:
    """Host memory of one node running `nproc` of the `w.world` processes of `w`.

    Args:
        m: the model.
        w: the workload (method, strategy, world size, cpu_offload).
        nproc: processes on this node.
        merge: `spec.output.mergeAdapter` is set.
        dora: LoRA with DoRA (loads the plain way).
    """
    nt = trainable_params(m, w)
    share = nproc / max(1, w.world)
    whole = weight_bytes(m, w)
    in_shards = loads_into_shards(m, w, dora)
    load = 0.0 if in_shards else nproc * (SHARD_BYTES if w.method == "qlora" else whole)
    offloaded = 0.0
    offload = w.cpu_offload
    if offload and w.strategy == "fsdp":
        offloaded = share * (whole + 4 * nt + 8 * nt)
    elif offload and w.strategy == "deepspeed-zero3":
        offloaded = share * (16 * nt + 2 * m.params)
    elif offload and w.strategy == "deepspeed-zero2":
        offloaded = share * 16 * nt
    sharded = w.strategy in ("fsdp", "fsdp-shard-grad-op") or w.strategy.startswith("deepspeed")
    if offloaded or w.strategy in ("fsdp", "fsdp-shard-grad-op"):
        checkpoint = 0.0
    elif w.strategy.startswith("deepspeed"):
        checkpoint = share * 4 * nt
    else:
        checkpoint = 8.0 * nt  # rank 0: the gathered weights and their serialised copy
    needs_cpu_merge = merge and w.adapter and (sharded or w.method == "qlora")
    merging = float(merge_host_bytes(m)) if needs_cpu_merge else 0.0
    gpu_load = 0.0 if w.method == "qlora" else whole / max(1, w.world) if in_shards else whole
    return HostEstimate(process=nproc * PROCESS_BYTES, load=load, offloaded=offloaded, checkpoint=checkpoint,
                        merge=merging, gpu_load=gpu_load, sharded_load=in_shards)


def describe_host(h: HostEstimate, host_bytes: int | None = None) -> str:
    """One line for `finetune plan`."""
    parts = [f"loading {h.load / GiB:.0f}" + (" (into shards)" if h.sharded_load else "")]
    if h.offloaded:
        parts.append(f"offloaded state {h.offloaded / GiB:.0f}")
    if h.checkpoint:
        parts.append(f"checkpoint copy {h.checkpoint / GiB:.0f}")
    if h.merge:
        parts.append(f"merge {h.merge / GiB:.0f}")
    have = f" of {host_bytes / GiB:.0f} GiB" if host_bytes else ""
    return (f"host memory:   {h.peak / GiB:.0f} GiB per node{have} at its peak ({h.dominant}; "
            + ", ".join(parts) + f", processes {h.process / GiB:.0f} GiB)")
