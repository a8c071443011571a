"""What this machine can run of a valid spec, checked before anything loads.

Every method, objective and strategy the API accepts is implemented (the spec's enums are the trainer's), so
what is left to refuse is the device: DeepSpeed and QLoRA need CUDA. Refused here, by field, never ignored.
"""

from __future__ import annotations

from finetune_api.trainer_config import TrainerConfig

from .errors import EnvironmentProblem

CPU_STRATEGIES = frozenset({"single", "ddp", "fsdp"})  # DeepSpeed needs CUDA


def check_supported(cfg: TrainerConfig) -> None:
    """Raise EnvironmentProblem for the first option in `cfg` this machine cannot run.

    Raises:
        EnvironmentProblem: names the field and the value.
    """
    strategy = cfg.plan.strategy  # None: the memory plan decides it on the node, among GPU strategies
    if cfg.device == "cpu" and strategy is not None and strategy not in CPU_STRATEGIES:
        raise EnvironmentProblem(f"spec.distributed.strategy {strategy} needs CUDA GPUs; this run is on the CPU")
