"""The memory planner on the benchmark's models: the estimate's parts, and the choices it makes from them."""

import pytest

from finetune_plan.memory import (GiB, DoesNotFit, ModelShape, Workload, choose, estimate, merge_host_bytes,
                                      parse_bytes, trainable_params)

LLAMA_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": False}
LLAMA_1B = {"vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "tie_word_embeddings": True}
H100, H200 = 80 * GiB, 141 * GiB


def test_parameter_counts_match_the_published_sizes():
    assert ModelShape.from_config(LLAMA_8B).params == pytest.approx(8.03e9, rel=0.01)
    assert ModelShape.from_config(LLAMA_1B).params == pytest.approx(1.236e9, rel=0.01)
    m = ModelShape.from_config(LLAMA_8B)
    assert trainable_params(m, Workload("lora", "ddp", 1, 2048, H100, lora_rank=16)) == pytest.approx(41.9e6, rel=0.01)


def test_weights_by_method():
    m = ModelShape.from_config(LLAMA_8B)
    w = lambda method: estimate(m, Workload(method, "ddp", 1, 2048, H100), 1, True).weights / GiB  # noqa: E731
    assert w("lora") == pytest.approx(15.1, abs=0.3)  # bf16 base + fp32 adapters
    assert w("qlora") == pytest.approx(5.5, abs=0.3)  # NF4 block linears; embeddings, head, norms bf16
    assert w("full") == pytest.approx(29.9 + 15.0, abs=0.4)  # fp32 master weights + autocast's bf16 copies


def test_sharding_divides_state_by_the_world():
    m = ModelShape.from_config(LLAMA_8B)
    ddp = estimate(m, Workload("full", "ddp", 2, 2048, H200), 1, True)
    fsdp = estimate(m, Workload("full", "fsdp", 2, 2048, H200), 1, True)
    zero2 = estimate(m, Workload("full", "deepspeed-zero2", 2, 2048, H200), 1, True)
    assert fsdp.optimizer == pytest.approx(ddp.optimizer / 2) and fsdp.weights < ddp.weights / 1.8
    assert zero2.weights == pytest.approx(ddp.weights - 2 * m.params)  # DeepSpeed: no autocast weight cache
    assert zero2.gradients == pytest.approx(ddp.gradients / 2)
    off = estimate(m, Workload("full", "deepspeed-zero3", 2, 2048, H200, cpu_offload=True), 1, True)
    assert off.optimizer == 0 and off.weights < 2 * GiB


def test_w1_lora_on_one_h100_fits_without_checkpointing():
    p = choose(ModelShape.from_config(LLAMA_8B), Workload("lora", "single", 1, 2048, H100), 16)
    assert p.checkpointing is False and p.micro * p.accumulation == 16 and p.estimate.total <= 0.92 * H100


def test_w3_full_1b_on_one_h100_fits():
    p = choose(ModelShape.from_config(LLAMA_1B), Workload("full", "single", 1, 2048, H100), 16)
    assert p.micro >= 1 and p.estimate.total <= 0.92 * H100


def test_full_8b_does_not_fit_one_h100_and_says_why():
    with pytest.raises(DoesNotFit, match=r"needs \d+\.\d GiB per GPU .* of 80 GiB"):
        choose(ModelShape.from_config(LLAMA_8B), Workload("full", "ddp", 1, 2048, H100), 16)


def test_auto_strategy_picks_the_least_sharding_that_fits():
    m = ModelShape.from_config(LLAMA_8B)
    auto = ["ddp", "fsdp-shard-grad-op", "fsdp"]
    assert choose(m, Workload("lora", "ddp", 2, 2048, H200), 16, candidates=auto).strategy == "ddp"
    full = choose(m, Workload("full", "ddp", 2, 2048, H100), 16, candidates=auto)
    assert full.strategy == "fsdp"  # 8B full: replicated or grad-op sharded do not fit 80 GiB; full shard does


def test_explicit_micro_and_checkpointing_are_kept():
    p = choose(ModelShape.from_config(LLAMA_1B), Workload("full", "single", 1, 2048, H100), 16, micro=2,
               checkpointing=True)
    assert (p.micro, p.checkpointing, p.accumulation) == (2, True, 8)


def test_preference_pairs_double_the_activation_rows():
    m = ModelShape.from_config(LLAMA_1B)
    one = estimate(m, Workload("lora", "single", 1, 1024, H100), 2, False)
    two = estimate(m, Workload("lora", "single", 1, 1024, H100, rows_per_example=2), 2, False)
    assert two.activations == pytest.approx(2 * one.activations) and two.logits == pytest.approx(2 * one.logits)


# Measured on an H100: peak allocated GiB at 2048-token packed rows (bench/results/planner-h100-2026-11-25.json for
# LoRA and full under autocast; W2-h100-2026-11-25*.json for QLoRA with bf16 non-quantized weights + Liger + the fast
# LoRA forward; W3-h100-2026-11-25*.json for full fine-tuning under FSDP2 on one GPU).
MEASURED = [("lora", LLAMA_8B, 3, False, "ddp", 41.62), ("lora", LLAMA_8B, 4, False, "ddp", 50.14),
            ("lora", LLAMA_8B, 6, False, "ddp", 67.36), ("lora", LLAMA_8B, 4, True, "ddp", 19.15),
            ("lora", LLAMA_8B, 8, True, "ddp", 22.07), ("lora", LLAMA_1B, 4, False, "ddp", 11.98),
            ("qlora", LLAMA_8B, 2, True, "ddp", 7.75), ("qlora", LLAMA_8B, 4, False, "ddp", 40.5),
            ("full", LLAMA_1B, 4, False, "ddp", 44.34), ("full", LLAMA_1B, 8, True, "ddp", 41.97),
            ("full", LLAMA_1B, 4, False, "fsdp", 30.72), ("full", LLAMA_1B, 8, False, "fsdp", 40.15),
            ("full", LLAMA_1B, 16, False, "fsdp", 54.4)]


@pytest.mark.parametrize("method,config,micro,ckpt,strategy,gib", MEASURED)
def test_estimate_within_15_percent_of_the_measured_peak(method, config, micro, ckpt, strategy, gib):
    e = estimate(ModelShape.from_config(config), Workload(method, strategy, 1, 2048, H100), micro, ckpt)
    assert e.total / GiB == pytest.approx(gib, rel=0.15)


def test_without_liger_the_logits_and_fp32_lora_inputs_count():
    m = ModelShape.from_config(LLAMA_8B)
    fused = estimate(m, Workload("lora", "ddp", 1, 2048, H100), 2, False)
    plain = estimate(m, Workload("lora", "ddp", 1, 2048, H100, fused_kernels=False), 2, False)
    assert fused.logits == 0 and plain.logits > 4 * GiB and plain.activations > 2 * fused.activations
    zero3 = estimate(m, Workload("full", "deepspeed-zero3", 2, 2048, H200), 1, True)
    assert zero3.logits > 0  # Liger's fused loss is off under ZeRO-3


def test_cpu_offload_on_one_gpu_keeps_only_blocks_in_flight():
    off = estimate(ModelShape.from_config(LLAMA_8B), Workload("full", "deepspeed-zero3", 1, 2048, H100, cpu_offload=True),
                   1, True)
    assert off.weights < 2 * GiB and off.gradients == 0 and off.optimizer == 0


def test_merge_needs_the_bf16_base_in_host_memory():
    assert merge_host_bytes(ModelShape.from_config(LLAMA_8B)) / GiB == pytest.approx(18.5, abs=1)


@pytest.mark.parametrize("text,value", [("141GiB", 141 * GiB), ("80GB", 80 * 10 ** 9), ("1.5Ti", int(1.5 * 1024 ** 4)),
                                        ("1024", 1024)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


# QLoRA 8B, 4 packed rows, the first k of 32 blocks checkpointed (W2-h100-2026-11-25-partial-ckpt.json, -run1, -run2)
PARTIAL = [(0, 40.5), (8, 32.52), (16, 24.48), (24, 16.43), (32, 9.40)]


@pytest.mark.parametrize("layers,gib", PARTIAL)
def test_partial_checkpointing_estimate_within_10_percent(layers, gib):
    e = estimate(ModelShape.from_config(LLAMA_8B), Workload("qlora", "ddp", 1, 2048, H100), 4, layers > 0, layers)
    assert e.total / GiB == pytest.approx(gib, rel=0.10)


def test_checkpointing_covers_only_as_many_blocks_as_memory_needs():
    """QLoRA 8B on a 16 GiB GPU: no micro-batch fits without checkpointing; the plan checkpoints the fewest blocks
    with which its micro-batch fits — one block fewer would not — and recomputes nothing more."""
    m = ModelShape.from_config(LLAMA_8B)
    w = Workload("qlora", "ddp", 1, 2048, 16 * GiB)
    p = choose(m, w, 16)
    assert p.checkpointing and 0 < p.checkpoint_layers < m.layers
    assert p.estimate.total <= 0.92 * w.gpu_bytes
    assert estimate(m, w, p.micro, True, p.checkpoint_layers - 1).total > 0.92 * w.gpu_bytes
    assert p.estimate.total == estimate(m, w, p.micro, True, p.checkpoint_layers).total
    # an explicit gradientCheckpointing: true checkpoints every block
    assert choose(m, w, 16, checkpointing=True).checkpoint_layers == m.layers
    assert choose(m, Workload("qlora", "ddp", 1, 2048, H100), 16).checkpoint_layers == 0  # fits without


def test_each_checkpointed_block_keeps_only_its_input():
    m = ModelShape.from_config(LLAMA_8B)
    w = Workload("lora", "ddp", 1, 2048, H100)
    acts = [estimate(m, w, 2, True, k).activations for k in range(1, m.layers + 1)]
    assert all(a > b for a, b in zip(acts[:-1], acts[1:-1]))  # one more checkpointed block, less memory (the last
    assert acts[-1] >= acts[-2]  # block saves nothing: backward recomputes it at once)
    assert estimate(m, w, 2, True, m.layers).activations == estimate(m, w, 2, True).activations
    assert estimate(m, w, 2, False).activations > acts[0] > 10 * acts[-1]


# Peaks measured through `finetune run` on 2xH200 (bench/results/multi-gpu-h200-*-2026-11-30.json): the planner
# must stay within 10% of each.
H200_ROWS = [  # (model, method, strategy, world, micro, accumulation, measured GiB per rank)
    ("meta-llama/llama-3.1-8b", "full", "fsdp", 2, 4, 2, 113.905),
    ("meta-llama/llama-3.1-8b", "full", "fsdp", 2, 6, 1, 101.088),  # multi-gpu-h200-w4-fsdp-shape-6x1-*
    ("meta-llama/llama-3.1-8b", "full", "fsdp", 2, 8, 1, 118.152),  # multi-gpu-h200-w4-*-planner-8x1-*
    ("meta-llama/llama-3.1-8b", "full", "deepspeed-zero3", 2, 4, 2, 108.623),
    ("meta-llama/llama-3.2-1b", "full", "fsdp", 2, 8, 1, 27.098),
    ("meta-llama/llama-3.2-1b", "full", "deepspeed-zero3", 2, 8, 1, 54.217),
    ("meta-llama/llama-3.1-8b", "lora", "ddp", 1, 4, 3, 50.034),
    ("meta-llama/llama-3.1-8b", "lora", "ddp", 2, 4, 3, 50.19),
]


@pytest.mark.parametrize("model,method,strategy,world,micro,acc,measured", H200_ROWS)
def test_the_planner_is_within_ten_percent_of_every_measured_2xh200_peak(model, method, strategy, world, micro, acc,
                                                                          measured):
    from finetune_plan.catalog import SHAPES

    e = estimate(SHAPES[model], Workload(method, strategy, world, 2048, 140 * GiB), micro, False, accumulation=acc)
    assert abs(e.total / GiB - measured) / measured < 0.10, (e.as_gib(), measured)


def test_fsdp_accumulation_keeps_unsharded_fp32_gradients():
    m, w = ModelShape.from_config(LLAMA_8B), Workload("full", "fsdp", 2, 2048, H200)
    two = estimate(m, w, 4, False, accumulation=2)
    assert two.gradients == 4 * m.params


def test_without_accumulation_fsdp_gradients_do_not_sit_beside_the_activations():
    # one micro-batch per step: gradients are made in backward as the activations are freed, so the peak is the
    # larger of the two; the 8B W4 default (global batch 16 on 2 GPUs) then runs as micro 8 x 1 (measured 50-53%
    # MFU against 47% at 4 x 2), not with half the micro-batch and accumulation
    from finetune_plan.memory import choose

    m, w = ModelShape.from_config(LLAMA_8B), Workload("full", "fsdp", 2, 2048, 140 * GiB)
    one = estimate(m, w, 8, False, accumulation=1)
    assert one.gradients == pytest.approx(4 * m.params / m.layers)  # one block's, before its reduce-scatter
    assert one.total < estimate(m, w, 8, False, accumulation=2).total
    p = choose(m, w, 16)
    assert (p.micro, p.accumulation, p.checkpointing) == (8, 1, False)
    # small activations (micro 1 of a short sequence): the sharded gradients are the larger, and are counted
    short = Workload("full", "fsdp", 2, 128, 140 * GiB)
    assert estimate(m, short, 1, False, accumulation=1).gradients > 0.9 * 4 * m.params / 2 - \
        estimate(m, short, 1, False, accumulation=1).activations


# The same, with checkpointing and LoRA dropout as the runs had them (the 70B rows: bench/results/multi-gpu-h200-w6*,
# one H200 for QLoRA; the W5-shaped row with `--lora-dropout 0.05`).
H200_DROPOUT_ROWS = [  # (model, method, strategy, world, micro, accumulation, checkpointing, dropout, measured GiB)
    ("meta-llama/llama-3.1-70b", "lora", "fsdp", 2, 1, 8, False, 0.0, 118.262),
    ("meta-llama/llama-3.1-70b", "qlora", "ddp", 1, 1, 16, False, 0.05, 104.608),
    ("meta-llama/llama-3.1-70b", "qlora", "ddp", 1, 16, 1, True, 0.05, 94.717),
    ("meta-llama/llama-3.1-8b", "lora", "ddp", 1, 4, 3, False, 0.05, 67.565),
]


@pytest.mark.parametrize("model,method,strategy,world,micro,acc,ckpt,dropout,measured", H200_DROPOUT_ROWS)
def test_the_planner_is_within_ten_percent_with_checkpointing_and_lora_dropout(model, method, strategy, world, micro,
                                                                                acc, ckpt, dropout, measured):
    from finetune_plan.catalog import SHAPES

    w = Workload(method, strategy, world, 2048, 140 * GiB, lora_dropout=dropout)
    e = estimate(SHAPES[model], w, micro, ckpt, accumulation=acc)
    assert abs(e.total / GiB - measured) / measured < 0.10, (e.as_gib(), measured)


def test_lora_dropout_keeps_a_copy_and_mask_of_each_adapted_input():
    """70B QLoRA on one H200 with the spec's default dropout: the planner's pick is the shape that ran (micro 1,
    no checkpointing, 104.6 GiB); before dropout was counted it picked micro 2, which ran out of memory."""
    from finetune_plan.catalog import SHAPES

    m = SHAPES["meta-llama/llama-3.1-70b"]
    plain = Workload("qlora", "ddp", 1, 2048, 140 * GiB)
    dropped = Workload("qlora", "ddp", 1, 2048, 140 * GiB, lora_dropout=0.05)
    ins = sum(a for a, _ in m.linears().values())
    extra = estimate(m, dropped, 1, False).activations - estimate(m, plain, 1, False).activations
    # + 3 bytes per adapted input element, - the norm outputs and the MLP product no longer kept
    assert extra == pytest.approx(2048 * m.layers * (3 * ins - 2 * (2 * m.hidden + m.intermediate)))
    pick = choose(m, dropped, 16)
    assert (pick.micro, pick.checkpointing) == (1, False)
    assert pick.estimate.total / GiB == pytest.approx(104.608, rel=0.05)
    assert choose(m, plain, 16).micro == 2  # what the planner picked before, and what ran out of memory with dropout
