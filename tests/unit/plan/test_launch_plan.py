"""One function decides the launch plan: the operator's part, the node's completion and `finetune plan` agree.

For every example job the project ships: the plan the operator renders into the ConfigMap (no GPU size, no model
shape unless the hub id is well known), the plan the pod's launcher completes on a 141 GiB GPU with the model's
config, and what `finetune plan` prints for the same machine must name the same strategy, micro-batch,
accumulation and checkpointing wherever the operator decided them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_api import load_job
from finetune_api.trainer_config import TrainerConfig
from finetune_cli.main import main as cli
from finetune_operator.render import render_children
from finetune_plan import Machine, plan_launch
from finetune_plan.catalog import SHAPES, shape_for_hub_id
from finetune_plan.memory import GiB
from finetune_trainer import launcher, liger, local_run, modeling

REPO = Path(__file__).resolve().parents[3]
# every FineTuneJob we ship (examples/kueue/queues.yaml holds Kueue's objects: tests/cluster/test_kueue.py)
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*.yaml") if "kind: FineTuneJob" in p.read_text())
H200 = 141 * GiB
MODEL_OF_PATH = {"Mistral-7B-v0.3": "mistralai/mistral-7b-v0.3", "Qwen2.5-7B-Instruct": "qwen/qwen2.5-7b"}
DECIDED = ("strategy", "micro_batch", "gradient_accumulation", "checkpointing")


def config_json(shape) -> dict:
    return {"vocab_size": shape.vocab, "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
            "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
            "num_key_value_heads": shape.kv_heads, "head_dim": shape.head_dim, "tie_word_embeddings": shape.tied}


def shape_of(job):
    m = job.spec.model
    if m.hub_id:
        return shape_for_hub_id(m.hub_id)
    name = Path(m.path).name
    return SHAPES.get(MODEL_OF_PATH.get(name, ""))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(REPO / "examples")))
def test_operator_node_and_finetune_plan_agree(example, tmp_path, monkeypatch, capsys):
    job = load_job(example)
    if job.spec.distributed.gpus_per_node == 0 or job.spec.distributed.gpus_per_node == "auto" \
            and "cluster" not in example.parts:
        pytest.skip("a CPU job: covered by test_cpu_jobs_plan_the_same_locally_and_in_a_cluster")
    shape = shape_of(job)
    assert shape is not None, f"{example}: give the test the model's shape"
    children = render_children(job.model_copy(update={"metadata": job.metadata.model_copy(update={"namespace": "ns"})}),
                               uid="u", image="i")
    cm = next(c for c in children if c["kind"] == "ConfigMap")
    operator_cfg = TrainerConfig.model_validate_json(cm["data"]["config.json"])
    monkeypatch.setattr(local_run, "gpu_memory_bytes", lambda: H200)
    monkeypatch.setattr(liger, "installed", lambda: True)  # the trainer image has Liger's kernels
    monkeypatch.setattr(modeling, "model_config", lambda cfg: config_json(shape))
    node_cfg = launcher.complete_plan(operator_cfg)
    assert node_cfg.plan.complete
    for field in DECIDED:
        if getattr(operator_cfg.plan, field) is not None:
            assert getattr(operator_cfg.plan, field) == getattr(node_cfg.plan, field), field
    # `finetune plan` for the same node prints the same decisions
    spec_file = tmp_path / "job.yaml"
    doc = json.loads(json.dumps(job.to_wire()))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config_json(shape)))
    doc["spec"]["model"] = {"path": "model"}
    spec_file.write_text(json.dumps(doc))
    monkeypatch.setattr(modeling, "model_config", _read_config)
    gpus = node_cfg.plan.nproc_per_node
    assert cli(["plan", str(spec_file), "--gpu-memory", "141GiB", "--gpus", str(gpus)]) == 0
    printed = capsys.readouterr().out
    p = node_cfg.plan
    assert f"strategy:      {p.strategy}" in printed, printed
    if job.spec.distributed.nodes == 1:
        assert f"micro-batch:   {p.micro_batch} x accumulation {p.gradient_accumulation} x {gpus} =" in printed, printed


def _read_config(cfg):
    return json.loads((Path(cfg.model_path) / "config.json").read_text())


@pytest.mark.parametrize("example", [p for p in EXAMPLES if "cluster" not in p.parts or "cpu" in p.name],
                         ids=lambda p: p.name)
def test_cpu_jobs_plan_the_same_locally_and_in_a_cluster(example, tmp_path):
    job = load_job(example).model_copy(deep=True)
    job.spec.distributed.gpus_per_node = 0
    job.spec.output.path = str(tmp_path / "out")  # whatever an earlier run left in the example's own folder
    local = local_run.plan_local(job, example, gpus_visible=0).plan
    operator = plan_launch(job, Machine(device="cpu"))
    for field in DECIDED:
        assert getattr(local, field) == getattr(operator, field), field


def test_a_partial_plan_is_completed_on_the_node_and_a_contradiction_is_a_bug(monkeypatch):
    job = load_job(REPO / "examples" / "cluster" / "lora-hub-1gpu.yaml")
    operator = plan_launch(job, Machine(device="cuda", nproc_per_node=2))
    assert operator.strategy is None and operator.micro_batch is None  # DDP or FSDP: the memory plan's choice
    assert operator.disk is None  # no shape given here
    with_shape = plan_launch(job, Machine(device="cuda", nproc_per_node=2), shape_for_hub_id(job.spec.model.hub_id))
    assert with_shape.disk.peak_bytes > with_shape.disk.output_bytes > 0
    full = plan_launch(job.model_copy(update={"spec": job.spec.model_copy(update={"method": job.spec.method.model_copy(
        update={"type": "full"})})}), Machine(device="cuda", nproc_per_node=2))
    assert full.strategy == "fsdp"  # full fine-tuning is sharded whatever the memory plan says of the degree
    cfg = TrainerConfig(job=job, output_dir="/o", plan=operator.model_copy(update={"micro_batch": 3,
                                                                                   "gradient_accumulation": 1}))
    monkeypatch.setattr(local_run, "gpu_memory_bytes", lambda: H200)
    monkeypatch.setattr(modeling, "model_config", lambda c: config_json(shape_for_hub_id(job.spec.model.hub_id)))
    with pytest.raises(RuntimeError, match="launch plan: micro_batch was 3"):
        launcher.complete_plan(cfg)


def test_the_config_file_keeps_which_fields_the_user_set(monkeypatch):
    """micro 4 x accumulation 2 on one GPU with no globalBatchSize is valid; re-planning on the node from the
    config file must not mistake the default globalBatchSize (16) for the user's and refuse the job."""
    from finetune_api import load_job_text

    job = load_job_text("apiVersion: finetune.io/v1alpha1\nkind: FineTuneJob\nmetadata: {name: t, namespace: n}\n"
                        "spec:\n  model: {hubId: meta-llama/Llama-3.1-8B}\n"
                        "  dataset: {paths: [/d.jsonl], format: messages}\n"
                        "  training: {microBatchSize: 4, gradientAccumulation: 2}\n"
                        "  distributed: {gpusPerNode: 1}\n  output: {path: out, volume: {claimName: results}}\n")
    cm = next(c for c in render_children(job, uid="u", image="i") if c["kind"] == "ConfigMap")
    cfg = TrainerConfig.model_validate_json(cm["data"]["config.json"])
    monkeypatch.setattr(local_run, "gpu_memory_bytes", lambda: H200)
    monkeypatch.setattr(modeling, "model_config", lambda c: config_json(shape_for_hub_id("meta-llama/Llama-3.1-8B")))
    done = launcher.complete_plan(TrainerConfig.model_validate_json(cfg.to_json()))
    assert (done.plan.micro_batch, done.plan.gradient_accumulation) == (4, 2)


def test_auto_shards_a_full_fine_tune_fully_where_shard_grad_op_would_fit_but_train_slower():
    """8B full fine-tuning on 2xH200: shard-grad-op fits (measured 125.5 GiB) but ran at 37.7% MFU against full
    shard's 49.4% (bench/results/multi-gpu-h200-w4-auto-2026-11-30.json): `strategy: auto` picks full shard."""
    job = load_job(REPO / "examples" / "cluster" / "lora-hub-1gpu.yaml")
    spec = job.spec.model_copy(update={
        "model": job.spec.model.model_copy(update={"hub_id": "meta-llama/Llama-3.1-8B"}),
        "method": job.spec.method.model_copy(update={"type": "full"})})
    plan = plan_launch(job.model_copy(update={"spec": spec}), Machine(device="cuda", nproc_per_node=2, gpu_bytes=H200),
                       shape_for_hub_id("meta-llama/Llama-3.1-8B"))
    assert (plan.strategy, plan.reshard_after_forward) == ("fsdp", True), plan
