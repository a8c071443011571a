"""The DeepSpeed config of a run, generated from the spec: users never write one by hand.

A pure function (no deepspeed import), so it is unit-tested on any machine and `finetune plan` can show it.
What each key is for:

- `zero_optimization.stage` 2 (optimizer state + gradients sharded) or 3 (+ parameters), with
  `overlap_comm` and contiguous gradients as DeepSpeed's own docs recommend; ZeRO-3 gathers a 16-bit copy of
  the weights on save (`stage3_gather_16bit_weights_on_model_save`) so the output is a normal safetensors model.
- `offload_optimizer` (and for ZeRO-3 `offload_param`) to pinned CPU memory when `spec.distributed.cpuOffload`.
- `bf16.enabled`: bf16 compute with fp32 master weights and optimizer state (DeepSpeed's mixed precision).
- `train_micro_batch_size_per_gpu` / `gradient_accumulation_steps` / `train_batch_size` from the batch plan.
  Our loop normalises the loss by the step's token (or pair) count itself, so it calls
  `engine.backward(loss, scale_wrt_gas=False)`: DeepSpeed must not divide by the accumulation again.
- `gradient_clipping`: spec.training.maxGradNorm (0 disables).
- `optimizer`: AdamW with the spec's learning rate and weight decay; DeepSpeed picks its fused CPU Adam when the
  optimizer is offloaded. The LR schedule stays ours (transformers' scheduler on DeepSpeed's optimizer).
"""

from __future__ import annotations


def build_deepspeed_config(*, stage: int, micro: int, accumulation: int, world: int, learning_rate: float,
                           weight_decay: float, max_grad_norm: float, cpu_offload: bool, bf16: bool = True) -> dict:
    """The DeepSpeed config dict for ZeRO `stage`.

    Args:
        stage: 2 or 3.
        micro, accumulation, world: the batch plan (micro x accumulation x world = the optimizer's batch).
        learning_rate, weight_decay, max_grad_norm: spec.training's.
        cpu_offload: offload optimizer state (and, for stage 3, parameters) to CPU memory.
        bf16: bf16 mixed precision (False: fp32 throughout, e.g. GPUs without bf16).

    Returns:
        A new dict (JSON-serialisable) for `deepspeed.initialize(config=...)`.

    Raises:
        ValueError: stage not 2 or 3.
    """
    if stage not in (2, 3):
        raise ValueError(f"ZeRO stage must be 2 or 3, got {stage}")
    zero: dict = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True,
                  "reduce_bucket_size": 5e8}
    if stage == 2:
        zero |= {"allgather_partitions": True, "allgather_bucket_size": 5e8, "reduce_scatter": True}
    else:
        zero |= {"stage3_gather_16bit_weights_on_model_save": True, "stage3_prefetch_bucket_size": 5e8,
                 "stage3_param_persistence_threshold": 1e6, "sub_group_size": 1e9}
    if cpu_offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": micro * accumulation * world,
        "gradient_clipping": max_grad_norm if max_grad_norm > 0 else 0.0,
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        "optimizer": {"type": "AdamW", "params": {"lr": learning_rate, "weight_decay": weight_decay,
                                                  "betas": [0.9, 0.999], "eps": 1e-8}},
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
        "steps_per_print": 10 ** 9,
    }


def config_for(cfg, micro: int, accumulation: int, world: int) -> dict:
    """build_deepspeed_config for a TrainerConfig whose strategy is deepspeed-zero2/zero3."""
    t = cfg.job.spec.training
    stage = {"deepspeed-zero2": 2, "deepspeed-zero3": 3}[cfg.strategy]
    return build_deepspeed_config(stage=stage, micro=micro, accumulation=accumulation, world=world,
                                  learning_rate=t.learning_rate, weight_decay=t.weight_decay,
                                  max_grad_norm=t.max_grad_norm, cpu_offload=cfg.job.spec.distributed.cpu_offload,
                                  bf16=cfg.job.spec.model.dtype in ("auto", "bfloat16"))
