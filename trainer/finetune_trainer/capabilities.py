"""What this version of the trainer can run, checked before anything loads.

The spec accepts every option of the API (the API is versioned separately from the trainer); an option the
trainer cannot run yet is refused here with NotSupportedYet naming the field, never silently ignored.
"""

from __future__ import annotations

from finetune_api.trainer_config import TrainerConfig

from .errors import NotSupportedYet

SUPPORTED_METHODS = frozenset({"lora", "qlora", "full", "spectrum"})
SUPPORTED_OBJECTIVES = frozenset({"sft", "cpt", "dpo", "orpo"})
SUPPORTED_STRATEGIES = frozenset({"single", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"})
CPU_STRATEGIES = frozenset({"single", "ddp", "fsdp"})  # DeepSpeed and QLoRA need CUDA


def check_supported(cfg: TrainerConfig) -> None:
    """Raise NotSupportedYet for the first option in `cfg` this trainer cannot run.

    Raises:
        NotSupportedYet: names the field and the value.
    """
    spec = cfg.job.spec
    if spec.method.type not in SUPPORTED_METHODS:
        raise NotSupportedYet("spec.method.type", f"method '{spec.method.type}'")
    if spec.objective.type not in SUPPORTED_OBJECTIVES:
        raise NotSupportedYet("spec.objective.type", f"objective '{spec.objective.type}'")
    strategy = cfg.plan.strategy  # None: the memory plan decides it on the node, among supported ones
    if strategy is not None and strategy not in SUPPORTED_STRATEGIES:
        raise NotSupportedYet("spec.distributed.strategy", f"strategy '{strategy}'")
    if cfg.device == "cpu" and strategy not in CPU_STRATEGIES:
        from .errors import EnvironmentProblem

        raise EnvironmentProblem(f"spec.distributed.strategy {strategy} needs CUDA GPUs; this run is on the CPU")
