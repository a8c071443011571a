"""What fits on a node: host memory per node, the whole-model load, mixtures of experts, the node presets."""

import pytest

from finetune_plan.catalog import shape_for_hub_id
from finetune_plan.host import host_estimate
from finetune_plan.memory import GiB, ModelShape, Workload
from finetune_plan.node import NODES, node_for, node_table, plan_cell

H200 = NODES["2xh200"]
LLAMA_70B = shape_for_hub_id("meta-llama/Llama-3.1-70B")


def test_offloading_70b_full_moves_about_a_terabyte_to_the_host():
    w = Workload("full", "fsdp", 2, 2048, 140 * GiB, cpu_offload=True)
    h = host_estimate(LLAMA_70B, w, nproc=2)
    # fp32 weights + fp32 gradients + AdamW's two moments = 16 bytes per parameter, all on this node's host
    assert h.offloaded == pytest.approx(16 * LLAMA_70B.params)
    assert h.dominant == "offloaded state" and h.peak / GiB > 1000
    two_nodes = host_estimate(LLAMA_70B, Workload("full", "fsdp", 4, 2048, 140 * GiB, cpu_offload=True), nproc=2)
    assert two_nodes.offloaded == pytest.approx(h.offloaded / 2)  # each node holds its processes' shards


def test_plain_loading_materialises_the_model_once_per_process_and_fsdp2_loads_into_shards():
    plain = host_estimate(LLAMA_70B, Workload("lora", "deepspeed-zero3", 2, 2048, 140 * GiB), nproc=2)
    assert plain.load / GiB == pytest.approx(2 * 2 * LLAMA_70B.params / GiB, rel=0.01)  # two bf16 copies
    assert plain.gpu_load / GiB == pytest.approx(132.2, abs=0.5)  # the bf16 model (+ fp32 adapters) on each GPU
    sharded = host_estimate(LLAMA_70B, Workload("lora", "fsdp", 2, 2048, 140 * GiB), nproc=2)
    assert sharded.sharded_load and sharded.load == 0 and sharded.gpu_load == pytest.approx(plain.gpu_load / 2)
    assert sharded.dominant == "processes"
    dora = host_estimate(LLAMA_70B, Workload("lora", "fsdp", 2, 2048, 140 * GiB), nproc=2, dora=True)
    assert not dora.sharded_load  # DoRA's magnitudes come from the loaded base: the plain way
    qlora = host_estimate(LLAMA_70B, Workload("qlora", "ddp", 2, 2048, 140 * GiB), nproc=2)
    assert qlora.load < 10 * GiB and qlora.gpu_load == 0  # quantised onto the GPU shard by shard


def test_the_planner_knows_which_architectures_the_trainer_loads_into_shards():
    from finetune_plan.host import SHARDED_LOAD_ARCHITECTURES
    from finetune_trainer.sharded_load import ARCHITECTURES

    assert SHARDED_LOAD_ARCHITECTURES == ARCHITECTURES
    assert shape_for_hub_id("meta-llama/Llama-3.1-70B").model_type == "llama"
    assert shape_for_hub_id("openai/gpt-oss-120b").model_type == "gpt_oss"


def test_a_replicated_checkpoint_is_gathered_and_serialised_on_rank_0():
    m = shape_for_hub_id("meta-llama/Llama-3.2-1B")
    h = host_estimate(m, Workload("full", "ddp", 2, 2048, 140 * GiB), nproc=2)
    assert h.checkpoint == pytest.approx(8 * m.params)
    assert host_estimate(m, Workload("full", "fsdp", 2, 2048, 140 * GiB), nproc=2).checkpoint == 0


def test_gpt_oss_120b_is_a_mixture_of_experts_with_its_published_size():
    m = shape_for_hub_id("openai/gpt-oss-120b")
    assert m.moe and m.params / 1e9 == pytest.approx(116.8, abs=0.1)
    assert m.active_params < m.params / 15
    assert set(m.linears()) == {"q_proj", "k_proj", "v_proj", "o_proj"}  # fused experts are not nn.Linear
    dense = ModelShape.from_config({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
                                    "num_hidden_layers": 2, "num_attention_heads": 2})
    assert not dense.moe and dense.active_params == dense.params


def test_8b_fits_every_way_on_2xh200_but_full_ddp():
    cells = {(c.method, c.label): c for c in node_table("meta-llama/Llama-3.1-8B",
                                                        shape_for_hub_id("meta-llama/Llama-3.1-8B"), H200)}
    assert not cells[("full", "ddp")].fits and cells[("full", "ddp")].why[0].startswith("GPU: needs")
    assert all(c.fits for k, c in cells.items() if k != ("full", "ddp"))
    assert cells[("full", "fsdp")].gpu_gib == pytest.approx(115.6, abs=1)  # 8x1; measured 118.2 at the same shape


def test_70b_full_on_2xh200_is_refused_by_gpu_or_host_and_lora_fsdp_and_qlora_fit():
    cells = {(c.method, c.label): c for c in node_table("meta-llama/Llama-3.1-70B", LLAMA_70B, H200)}
    assert not any(c.fits for (m, _), c in cells.items() if m == "full")
    off = cells[("full", "deepspeed-zero3+offload")]
    assert off.gpu_gib < 100 and off.why == [f"host: needs {off.host_gib:.0f} GiB (offloaded state) of 256"]
    assert cells[("lora", "fsdp")].fits and cells[("lora", "fsdp")].gpu_gib == pytest.approx(128.2, abs=1)  # spec's dropout
    # 0.05; with dropout 0: 113.7, measured 118.3 (test_memory.py's H200_DROPOUT_ROWS)
    assert cells[("lora", "deepspeed-zero3")].why == ["host: needs 272 GiB (loading) of 256"]
    assert cells[("qlora", "ddp")].fits
    roomy = plan_cell("meta-llama/Llama-3.1-70B", LLAMA_70B, node_for("2xH200").__class__(
        "big", 2, H200.gpu_bytes, 512 * GiB), "lora", "deepspeed-zero3", False)
    assert roomy.fits


def test_gpt_oss_120b_loads_whole_onto_each_gpu_and_so_fits_no_way_on_2xh200():
    m = shape_for_hub_id("openai/gpt-oss-120b")
    cells = node_table("openai/gpt-oss-120b", m, H200)
    assert not any(c.fits for c in cells)
    assert any("load: the whole model (218 GiB)" in w for c in cells for w in c.why)


def test_an_unknown_node_lists_the_presets():
    with pytest.raises(ValueError, match="presets: 1xH100, 8xH100, 1xH200, 2xH200, 8xH200"):
        node_for("3xTPU")
