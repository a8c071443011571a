"""What this machine can run of a valid spec, checked before anything loads.

Every method, objective and strategy the API accepts is implemented (the spec's enums are the trainer's), so
what is left to refuse is the device: DeepSpeed and QLoRA need CUDA. Refused here, by field, never ignored.
"""

from __future__ import annotations

from finetune_api.trainer_config import TrainerConfig

from .errors import EnvironmentProblem, TrainerInputError

CPU_STRATEGIES = frozenset({"single", "ddp", "fsdp"})  # DeepSpeed needs CUDA


def check_supported(cfg: TrainerConfig) -> None:
    """Raise EnvironmentProblem for the first option in `cfg` this machine cannot run.

    Raises:
        EnvironmentProblem: names the field and the value.
    """
    strategy = cfg.plan.strategy  # None: the memory plan decides it on the node, among GPU strategies
    if cfg.device == "cpu" and strategy is not None and strategy not in CPU_STRATEGIES:
        raise EnvironmentProblem(f"spec.distributed.strategy {strategy} needs CUDA GPUs; this run is on the CPU")
    check_attention(cfg)


def check_attention(cfg: TrainerConfig) -> None:
    """Refuse an attention kernel the run's device (or this machine's packages) cannot run.

    Raises:
        EnvironmentProblem: names spec.model.attnImplementation, the device and what to set instead.
    """
    name = cfg.job.spec.model.attn_implementation
    if name != "flash_attention_2":
        return
    if cfg.device != "cuda":
        raise EnvironmentProblem("spec.model.attnImplementation flash_attention_2 runs on NVIDIA GPUs only and this "
                                 "run is on the CPU; set it to auto (SDPA on the CPU) or sdpa")
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        raise EnvironmentProblem("spec.model.attnImplementation flash_attention_2 needs the flash-attn package, which "
                                 "is not installed here; set it to auto (PyTorch's own flash attention) or install "
                                 "flash-attn")


def check_lora_rank(cfg: TrainerConfig, linears: dict[str, tuple[int, int]]) -> None:
    """Refuse a LoRA rank that is not low: larger than a targeted layer's smaller side.

    An adapter B @ A of rank r on a (d_in x d_out) layer can express at most min(d_in, d_out) directions; a larger r
    only adds parameters (a rank 43x the model's width trains a thousand times more numbers for nothing).

    Args:
        linears: {module name: (in, out)} of the model's linear layers (one block is enough).

    Raises:
        TrainerInputError: names spec.method.lora.rank, the layer and the largest useful rank.
    """
    spec = cfg.job.spec
    if not spec.method.is_adapter or not linears:
        return
    targets = spec.lora.target_modules
    chosen = {n: s for n, s in linears.items() if targets == "all-linear" or n in targets}
    if not chosen:
        return
    name, (d_in, d_out) = min(chosen.items(), key=lambda kv: min(kv[1]))
    limit = min(d_in, d_out)
    if spec.lora.rank > limit:
        raise TrainerInputError(
            f"spec.method.lora.rank {spec.lora.rank} is larger than the targeted layer {name} allows ({d_in} -> "
            f"{d_out}: at most rank {limit}); a LoRA rank is meant to be small next to the model (8-64 is usual): "
            f"set rank to {min(limit, 16)} or less")
