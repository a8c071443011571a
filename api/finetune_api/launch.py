"""The torchrun command line for a job: shared by `finetune run` and the operator's pod template.

Kept here (no torch import) so the operator can render it and the local CLI can run it from one function:
the pods and a laptop start the trainer the same way.
"""

from __future__ import annotations

from typing import Optional

TRAINER_MODULE = "finetune_trainer.entrypoint"
RDZV_PORT = 29500


def torchrun_args(*, nodes: int, nproc_per_node: int, config_path: str, node_rank: Optional[str] = None,
                  master_addr: Optional[str] = None, master_port: int = RDZV_PORT) -> list[str]:
    """Arguments after `torchrun` (or `python -m torch.distributed.run`).

    Args:
        nodes: pods in the run; 1 runs standalone (local rendezvous).
        nproc_per_node: processes per pod (one per GPU, or 1 on CPU).
        config_path: the TrainerConfig JSON file each process reads.
        node_rank: this pod's rank, usually `$(JOB_COMPLETION_INDEX)` expanded by Kubernetes.
        master_addr: the host of node rank 0 (pod 0 through the headless Service).
        master_port: the rendezvous port on `master_addr`.

    Returns:
        The argv list; the trainer module and its `--config` come last.
    """
    if nodes == 1:
        head = ["--standalone", "--nnodes", "1"]
    else:
        if master_addr is None or node_rank is None:
            raise ValueError("multi-node runs need master_addr and node_rank")
        head = ["--nnodes", str(nodes), "--node-rank", node_rank, "--master-addr", master_addr,
                "--master-port", str(master_port)]
    return head + ["--nproc-per-node", str(nproc_per_node), "-m", TRAINER_MODULE, "--config", config_path]


def resolve_strategy(requested: str, method: str, world_size: int, device: str = "cuda") -> str:
    """`auto` -> a concrete strategy; one process needs none ("single") unless a sharded one is asked for.

    Full fine-tuning and Spectrum on GPUs resolve `auto` to FSDP2 even on one GPU: its mixed precision (fp32
    master weights, bf16 compute copies, fp32 gradients) runs the residual stream and Liger's kernels in bf16,
    where fp32 weights under autocast cannot — measured on W3 (Llama-3.2-1B full, H100): 47.6% MFU and 40 GiB
    vs 32.7% and 77 GiB (bench/results/W3-h100-2026-11-25.json).

    An explicit fsdp / deepspeed-zero2 / deepspeed-zero3 is kept on one process: with `cpuOffload` it is how a
    model too large for one GPU trains there (ZeRO-Offload), and dropping it would silently drop the offload.
    Shared by `finetune run` (trainer) and the operator's rendered TrainerConfig, so both decide alike.
    """
    if requested == "auto" and method in ("full", "spectrum") and device == "cuda":
        return "fsdp"
    if world_size == 1 and requested in ("auto", "ddp"):
        return "single"
    if requested != "auto":
        return requested
    return "fsdp" if method in ("full", "spectrum") else "ddp"
