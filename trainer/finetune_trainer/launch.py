"""`finetune run`: decide the local launch (devices, processes, strategy) and start torchrun.

Everything that can be refused is refused here, before torchrun starts and before any weights load:
options this version cannot run, a GPU count the machine does not have, QLoRA without a GPU. The
decision is printed (e.g. "no GPU visible: 1 CPU process"), so no fallback is silent.

`FINETUNE_CPU_PROCESSES=N` runs a CPU job as N processes (gloo) instead of one: the way tests and laptops
exercise DDP and FSDP2 without GPUs. It is an environment variable, not a spec field, because it changes where
a job runs, not what it trains: the same spec on one process must give the same curve.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

from finetune_api.job import FineTuneJob
from finetune_api.launch import resolve_strategy, torchrun_args  # noqa: F401  (re-exported)
from finetune_api.trainer_config import TrainerConfig

from .capabilities import check_supported
from .errors import EnvironmentProblem


def _resolve(base: Path, p: Optional[str]) -> Optional[str]:
    if p is None:
        return None
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else (base / q).resolve())


def visible_gpus() -> int:
    """CUDA devices this process can see (0 without torch's CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_local(job: FineTuneJob, spec_file: Path, gpus_visible: Optional[int] = None) -> TrainerConfig:
    """The TrainerConfig for running `job` on this machine.

    Args:
        job: the validated job.
        spec_file: the YAML it came from; relative paths in the spec are resolved against its directory.
        gpus_visible: override GPU detection (tests).

    Raises:
        NotSupportedYet: an option this version cannot run.
        EnvironmentProblem: the machine cannot run the spec as written.
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
            "(set it to 'auto', or to 0 for a CPU run)"
        )
    else:
        nproc, device = want, "cuda"
    if spec.method.type == "qlora" and device != "cuda":
        raise EnvironmentProblem("spec.method.type qlora needs a CUDA GPU (bitsandbytes 4-bit); none is visible")
    if spec.distributed.nodes != 1:
        raise EnvironmentProblem(
            f"spec.distributed.nodes is {spec.distributed.nodes}: `finetune run` uses this machine only; "
            "run multi-node jobs in a cluster (kubectl apply)"
        )
    world = nproc
    strategy = resolve_strategy(spec.distributed.strategy, spec.method.type, world, device)
    base = spec_file.resolve().parent
    cfg = TrainerConfig(
        job=job,
        model_path=_resolve(base, spec.model.path),
        dataset_paths=[_resolve(base, p) for p in spec.dataset.paths] if spec.dataset.paths else None,
        validation_paths=[_resolve(base, p) for p in spec.dataset.validation_paths]
        if spec.dataset.validation_paths else None,
        output_dir=_resolve(base, spec.output.path),
        nodes=1, nproc_per_node=nproc, device=device, strategy=strategy,
        metrics_port=int(os.environ["FINETUNE_METRICS_PORT"]) if os.environ.get("FINETUNE_METRICS_PORT") else None,
    )
    check_supported(cfg)
    check_merge_fits(cfg)
    return cfg


CPU_PROCESSES_ENV = "FINETUNE_CPU_PROCESSES"


def _cpu_processes() -> int:
    raw = os.environ.get(CPU_PROCESSES_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise EnvironmentProblem(f"{CPU_PROCESSES_ENV}={raw!r}: expected a whole number of processes >= 1")
    return int(raw)


def host_memory_bytes() -> int:
    """Physical memory of this machine (the pod's limit in a cluster is what the operator requests)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_merge_fits(cfg: TrainerConfig, host_bytes: Optional[int] = None) -> None:
    """Refuse `output.mergeAdapter` when the merge cannot fit, before anything loads.

    A sharded run (FSDP, ZeRO-3) or QLoRA merges on the CPU from the saved adapter (outputs.merged_model),
    which needs the base in bf16 in host memory; this compares the planner's figure with the machine's.

    Raises:
        EnvironmentProblem: names spec.output.mergeAdapter and both figures.
    """
    spec = cfg.job.spec
    if not spec.output.merge_adapter or (cfg.strategy in ("single", "ddp") and spec.method.type == "lora"):
        return
    from .batching import model_config
    from .planner import GiB, ModelShape, merge_host_bytes

    try:
        shape = ModelShape.from_config(model_config(cfg))
    except (OSError, KeyError):  # no config to read here: the trainer finds out at load
        return
    need, have = merge_host_bytes(shape), host_memory_bytes() if host_bytes is None else host_bytes
    if need > have:
        raise EnvironmentProblem(
            f"spec.output.mergeAdapter: merging this {shape.params / 1e9:.1f}B-parameter model after a "
            f"{cfg.strategy} run happens on the CPU and needs ~{need / GiB:.0f} GiB of host memory; this node has "
            f"{have / GiB:.0f} GiB. Set mergeAdapter to false and merge later on a larger machine")


def describe(cfg: TrainerConfig) -> str:
    """One line saying how the run will execute."""
    if cfg.device == "cpu":
        n = f"{cfg.nproc_per_node} CPU process{'es' if cfg.nproc_per_node > 1 else ''}"
        where = f"no GPU visible: {n}" if cfg.job.spec.distributed.gpus_per_node == "auto" else n
    else:
        where = f"{cfg.nproc_per_node} GPU process(es)"
    return f"launch: {where}, strategy {cfg.strategy}, output {cfg.output_dir}"


def run_local(cfg: TrainerConfig) -> int:
    """Start torchrun for `cfg` in this process and wait; returns the exit status (0 on success).

    The config goes to a temp file (not the output directory: a run that fails at setup writes nothing
    there). A failed child's one-line error (written by the entrypoint) is printed instead of torchrun's
    traceback.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    with tempfile.TemporaryDirectory(prefix="finetune-run-") as tmp:
        cfg_path = Path(tmp) / "config.json"
        err_path = Path(tmp) / "error.txt"
        cfg_path.write_text(cfg.model_dump_json(by_alias=True), encoding="utf-8")
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // cfg.nproc_per_node)))
        os.environ["FINETUNE_ERROR_FILE"] = str(err_path)
        args = get_args_parser().parse_args(
            torchrun_args(nodes=1, nproc_per_node=cfg.nproc_per_node, config_path=str(cfg_path))
        )
        try:
            run(args)
        except ChildFailedError:
            msg = err_path.read_text(encoding="utf-8").strip() if err_path.exists() else ""
            print(f"error: {msg or 'a trainer process failed (see its output above)'}", file=sys.stderr)
            return 2 if msg else 1
    return 0


def read_summary(output_dir: str) -> dict:
    """The manifest's summary of a finished run (metrics and files), for the CLI's last lines."""
    return json.loads((Path(output_dir) / "manifest.json").read_text(encoding="utf-8"))
