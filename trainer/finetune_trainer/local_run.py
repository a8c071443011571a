"""`finetune run` / `finetune plan` on this machine: the trainer config for a local run, refused early when it cannot run.

Everything that can be refused is refused here, before any worker starts and before any weights load: options
this version cannot run, a GPU count the machine does not have, QLoRA without a GPU, an output folder that is
not ours to write. The launch plan comes from `finetune_plan.plan_launch` (the one place it is decided) with
this machine's facts; it is printed, so no fallback is silent.

`FINETUNE_CPU_PROCESSES=N` runs a CPU job as N processes (gloo) instead of one: the way tests and laptops
exercise DDP and FSDP2 without GPUs. It is an environment variable, not a spec field, because it changes where
a job runs, not what it trains: the same spec on one process must give the same curve.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from finetune_api.job import FineTuneJob
from finetune_api.trainer_config import TrainerConfig
from finetune_plan import Machine, ModelShape, plan_launch
from finetune_plan import describe as describe_plan

from .capabilities import check_lora_rank, check_supported
from .errors import EnvironmentProblem, TrainerInputError
from .output_dir import check_output

CPU_PROCESSES_ENV = "FINETUNE_CPU_PROCESSES"


def _resolve(base: Path, p: Optional[str], field: str) -> Optional[str]:
    """`p` as an absolute path: `~` expanded, relative paths taken from the spec file's folder.

    Raises:
        TrainerInputError: a `~user` whose user does not exist here.
    """
    if p is None:
        return None
    try:
        q = Path(p).expanduser()
    except RuntimeError:  # '~nosuchuser/x': Python cannot find that user's home
        user = p[1:].split("/", 1)[0]
        raise TrainerInputError(f"{field}: '{p}' starts with '~{user}', but this machine has no user '{user}' "
                                "whose home it could mean; write the path in full") from None
    return os.path.abspath(q if q.is_absolute() else base / q)


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without torch's CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_memory_bytes() -> Optional[int]:
    """Memory of this machine's first GPU (None without one)."""
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
        return None
    return int(torch.cuda.get_device_properties(0).total_memory)


def host_memory_bytes() -> int:
    """Physical memory of this machine (the pod's limit in a cluster is what the operator requests)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def model_shape(cfg: TrainerConfig) -> Optional[ModelShape]:
    """The model's shape from its config.json, or None when it cannot be read here (the trainer says why later)."""
    from .modeling import model_config

    try:
        return ModelShape.from_config(model_config(cfg))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def local_machine(job: FineTuneJob, gpus_visible: Optional[int] = None,
                  gpu_bytes: Optional[int] = None) -> Machine:
    """Device and processes for `job` on this machine.

    Raises:
        EnvironmentProblem: the spec asks for GPUs or nodes this machine does not have.
    """
    spec = job.spec
    gpus = visible_gpus() if gpus_visible is None else gpus_visible
    want = spec.distributed.gpus_per_node
    cpu_procs = _cpu_processes()
    if want == "auto":
        nproc, device = (gpus, "cuda") if gpus > 0 else (cpu_procs, "cpu")
    elif want == 0:
        nproc, device = cpu_procs, "cpu"
    elif want > gpus:
        raise EnvironmentProblem(
            f"spec.distributed.gpusPerNode is {want} but this machine shows {gpus} GPU(s) "
            "(set it to 'auto', or to 0 for a CPU run)")
    else:
        nproc, device = want, "cuda"
    if spec.method.type == "qlora" and device != "cuda":
        raise EnvironmentProblem("spec.method.type qlora needs a CUDA GPU (bitsandbytes 4-bit); none is visible")
    if spec.distributed.nodes != 1:
        raise EnvironmentProblem(
            f"spec.distributed.nodes is {spec.distributed.nodes}: `finetune run` uses this machine only; "
            "run multi-node jobs in a cluster (kubectl apply)")
    if device == "cuda" and gpu_bytes is None and gpus_visible is None:
        gpu_bytes = gpu_memory_bytes()
    from .liger import installed

    return Machine(device=device, nodes=1, nproc_per_node=nproc, gpu_bytes=gpu_bytes,
                   fused_kernels=installed() if device == "cuda" else False)


def plan_local(job: FineTuneJob, spec_file: Path, gpus_visible: Optional[int] = None,
               gpu_bytes: Optional[int] = None) -> TrainerConfig:
    """The TrainerConfig for running `job` on this machine, with its launch plan.

    Args:
        job: the validated job.
        spec_file: the YAML it came from; relative paths in the spec are resolved against its directory.
        gpus_visible, gpu_bytes: override GPU detection (tests, planning for another machine).

    Raises:
        EnvironmentProblem: the machine cannot run the spec as written.
        DoesNotFit: nothing fits the GPU memory.
        OutputPathError: the output folder is not one this run may write (output_dir.check_output).
        TrainerInputError: a path that cannot be resolved, a LoRA rank too large for the model.
    """
    machine = local_machine(job, gpus_visible, gpu_bytes)
    cfg = resolve_paths(job, spec_file)
    check_output(cfg)  # before anything loads; the launcher checks again under its lock
    shape = model_shape(cfg)
    cfg = cfg.model_copy(update={"plan": plan_launch(job, machine, shape)})
    check_supported(cfg)
    if shape is not None:
        check_lora_rank(cfg, shape.linears())
    check_merge_fits(cfg)
    return cfg


def resolve_paths(job: FineTuneJob, spec_file: Path) -> TrainerConfig:
    """A TrainerConfig (no plan yet) whose relative spec paths are resolved against the spec file's folder."""
    spec = job.spec
    base = spec_file.resolve().parent
    return TrainerConfig(
        job=job,
        model_path=_resolve(base, spec.model.path, "spec.model.path"),
        dataset_paths=[_resolve(base, p, f"spec.dataset.paths[{i}]") for i, p in enumerate(spec.dataset.paths)]
        if spec.dataset.paths else None,
        validation_paths=[_resolve(base, p, f"spec.dataset.validationPaths[{i}]")
                          for i, p in enumerate(spec.dataset.validation_paths)] if spec.dataset.validation_paths else None,
        output_dir=_resolve(base, spec.output.path, "spec.output.path"),
        metrics_port=int(os.environ["FINETUNE_METRICS_PORT"]) if os.environ.get("FINETUNE_METRICS_PORT") else None,
    )


def _cpu_processes() -> int:
    raw = os.environ.get(CPU_PROCESSES_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise EnvironmentProblem(f"{CPU_PROCESSES_ENV}={raw!r}: expected a whole number of processes >= 1")
    return int(raw)


def check_merge_fits(cfg: TrainerConfig, host_bytes: Optional[int] = None) -> None:
    """Refuse `output.mergeAdapter` when the merge cannot fit, before anything loads.

    A sharded run (FSDP, ZeRO-3) or QLoRA merges on the CPU from the saved adapter (outputs.merged_model),
    which needs the base in bf16 in host memory; this compares the planner's figure with the machine's.

    Raises:
        EnvironmentProblem: names spec.output.mergeAdapter and both figures.
    """
    spec = cfg.job.spec
    strategy = cfg.plan.strategy
    if not spec.output.merge_adapter or (strategy in ("single", "ddp") and spec.method.type == "lora"):
        return
    from finetune_plan.memory import GiB, merge_host_bytes

    shape = model_shape(cfg)
    if shape is None:  # no config to read here: the trainer finds out at load
        return
    need, have = merge_host_bytes(shape), host_memory_bytes() if host_bytes is None else host_bytes
    if need > have:
        raise EnvironmentProblem(
            f"spec.output.mergeAdapter: merging this {shape.params / 1e9:.1f}B-parameter model after a "
            f"{strategy or 'sharded'} run happens on the CPU and needs ~{need / GiB:.0f} GiB of host memory; this "
            f"node has {have / GiB:.0f} GiB. Set mergeAdapter to false and merge later on a larger machine")


def describe(cfg: TrainerConfig) -> str:
    """How the run will execute: one headline, then the plan's lines."""
    plan = cfg.plan
    if plan.device == "cpu":
        n = f"{plan.nproc_per_node} CPU process{'es' if plan.nproc_per_node > 1 else ''}"
        where = f"no GPU visible: {n}" if cfg.job.spec.distributed.gpus_per_node == "auto" else n
    else:
        where = f"{plan.nproc_per_node} GPU process(es)"
    head = f"launch: {where}, strategy {plan.strategy or 'decided by the memory plan'}, output {cfg.output_dir}"
    return "\n".join([head] + ["  " + line for line in describe_plan(plan)[1:]])


def read_summary(output_dir: str) -> dict:
    """The manifest's summary of a finished run (metrics and files), for the CLI's last lines."""
    return json.loads((Path(output_dir) / "manifest.json").read_text(encoding="utf-8"))
