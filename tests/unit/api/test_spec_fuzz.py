"""Property-based fuzzing of the spec: whatever `finetune validate` accepts, rendering the pods, planning the launch
(CPU, one GPU, several GPUs, a cluster with no GPU size known) and the trainer's set-up on this machine either work
or refuse with a clean UserError — never another exception, which a user would see as a traceback.

Values are drawn per field around the edges that matter (bounds, 'auto', zero, huge, wrong types, empty), so most
drawn specs validate and go on to the later stages; the corpus (test_spec_corpus.py) covers the refusals by name.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from finetune_api.contract import UserError  # noqa: E402
from finetune_api.loading import SpecError, validate_job  # noqa: E402

INTS = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 7, 8, 16, 64, 4096, 10**7]), st.integers(-5, 100))
SMALL = st.sampled_from([1, 2, 4, 8, 16])
FLOATS = st.sampled_from([0.0, 1e-6, 2e-4, 0.03, 0.1, 0.5, 0.9999, 1.0, 2.0])
AUTO_INT = st.one_of(st.just("auto"), SMALL, INTS)
FIELDS = {  # dotted path under spec -> values to draw
    "method.type": st.sampled_from(["lora", "qlora", "full", "spectrum"]),
    "method.lora": st.fixed_dictionaries({}, optional={
        "rank": st.sampled_from([1, 4, 16, 64, 256, 4096]), "alpha": FLOATS, "dropout": FLOATS,
        "targetModules": st.one_of(st.just("all-linear"), st.lists(st.sampled_from(
            ["q_proj", "v_proj", "k_proj", "o_proj", "gate_proj", "nope"]), min_size=1, max_size=3)),
        "useDora": st.booleans()}),
    "method.spectrum": st.fixed_dictionaries({"fraction": FLOATS}),
    "objective.type": st.sampled_from(["sft", "cpt", "dpo", "orpo"]),
    "objective.beta": FLOATS,
    "dataset.format": st.sampled_from(["alpaca", "messages", "sharegpt", "prompt-completion", "text", "preference"]),
    "dataset.maxLength": st.sampled_from([16, 17, 128, 2048, 131072]),
    "dataset.packing": st.booleans(),
    "dataset.paddingFree": st.booleans(),
    "dataset.tooLong": st.sampled_from(["truncate", "drop"]),
    "dataset.validationSplit": st.sampled_from([0.01, 0.1, 0.5]),
    "dataset.chatTemplate": st.sampled_from(["{{ messages }}", "x", "{% for m in messages %}{{ m['content'] }}"
                                                                        "{% endfor %}"]),
    "training.maxSteps": st.sampled_from([1, 2, 10**7]),
    "training.epochs": st.sampled_from([0.001, 1, 3.5, 1000]),
    "training.learningRate": FLOATS,
    "training.warmupRatio": st.sampled_from([0.0, 0.03, 0.5]),
    "training.scheduler": st.sampled_from(["cosine", "linear", "constant", "constant_with_warmup"]),
    "training.microBatchSize": AUTO_INT,
    "training.gradientAccumulation": AUTO_INT,
    "training.globalBatchSize": st.sampled_from([1, 2, 3, 4, 16, 64, 1000]),
    "training.gradientCheckpointing": st.sampled_from(["auto", True, False]),
    "training.evalEverySteps": st.sampled_from([1, 50]),
    "distributed.nodes": st.sampled_from([1, 2, 512]),
    "distributed.gpusPerNode": st.one_of(st.just("auto"), st.sampled_from([0, 1, 2, 8])),
    "distributed.strategy": st.sampled_from(["auto", "ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"]),
    "distributed.cpuOffload": st.booleans(),
    "model.dtype": st.sampled_from(["auto", "bfloat16", "float16", "float32"]),
    "model.attnImplementation": st.sampled_from(["auto", "eager", "sdpa", "flex_attention", "flash_attention_2"]),
    "output.mergeAdapter": st.booleans(),
    "output.volume": st.sampled_from([{"claimName": "out"}, {"create": {"size": "1Gi"}}]),
    "output.path": st.sampled_from(["out", "a/b", ".", "/tmp/x", "../x", "run-1", "~nosuchuser/x", "/", "model",
                                    "data/train.jsonl", "x" * 300]),
    "model.path": st.sampled_from(["model", "missing", "/", "data"]),
    "resources.memory": st.sampled_from(["32Gi", "1", "0.5Gi", "500M"]),
    "scheduling.tolerations": st.lists(st.fixed_dictionaries({"operator": st.just("Exists")}, optional={
        "key": st.sampled_from(["gpu", "nvidia.com/gpu"]), "effect": st.sampled_from(["NoSchedule", "NoExecute"])}),
        max_size=2),
}
BASE = {"model": {"path": "model"}, "dataset": {"paths": ["data/train.jsonl"], "format": "messages"},
        "output": {"path": "out"}}
CONFIG = {"vocab_size": 32000, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
          "num_attention_heads": 8, "num_key_value_heads": 4}


@st.composite
def specs(draw) -> dict:
    spec = copy.deepcopy(BASE)
    for path in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=8)):
        node, *_, last = [spec] + path.split(".")
        for part in path.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[last] = draw(FIELDS[path])
    return {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "fuzz"}, "spec": spec}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text(json.dumps(CONFIG))
    (d / "data").mkdir()
    (d / "data" / "train.jsonl").write_text("{}\n")
    return d


def _clean(step: str, fn) -> None:
    try:
        fn()
    except UserError:
        pass
    except Exception as e:  # noqa: BLE001 - exactly what this test is looking for
        raise AssertionError(f"{step} raised {type(e).__name__}: {e}") from e


@settings(max_examples=300, deadline=None, database=None,  # no .hypothesis/ folder in the clone
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(obj=specs())
def test_a_spec_validate_accepts_never_crashes_render_plan_or_setup(folder, obj):
    try:
        job = validate_job(obj)
    except SpecError:
        return
    from finetune_operator.pod_config import build_trainer_config
    from finetune_operator.render import render_children
    from finetune_plan import GiB, Machine, ModelShape, plan_launch
    from finetune_trainer.capabilities import check_supported
    from finetune_trainer.local_run import check_merge_fits, plan_local

    shape = ModelShape.from_config(CONFIG)
    _clean("render", lambda: render_children(job, uid="u"))
    _clean("operator config", lambda: build_trainer_config(job))
    for machine, model in [(Machine("cpu"), shape), (Machine("cpu", nproc_per_node=2), shape),
                           (Machine("cuda", gpu_bytes=80 * GiB), shape),
                           (Machine("cuda", nproc_per_node=2, gpu_bytes=24 * GiB), shape),
                           (Machine("cuda", nodes=2, nproc_per_node=8), None)]:
        _clean(f"plan {machine}", lambda: plan_launch(job, machine, model))

    def setup(gpus: int) -> None:
        cfg = plan_local(job, folder / "job.yaml", gpus_visible=gpus, gpu_bytes=80 * GiB if gpus else None)
        if not cfg.plan.complete:  # the model's config was unreadable here: the node's launcher completes it
            from finetune_trainer.launcher import complete_plan

            cfg = complete_plan(cfg)
        check_supported(cfg)
        check_merge_fits(cfg, host_bytes=64 * GiB)
        if cfg.plan.complete and cfg.strategy.startswith("deepspeed"):
            from finetune_trainer.deepspeed_config import config_for

            config_for(cfg, cfg.plan.micro_batch, cfg.plan.gradient_accumulation, cfg.plan.world_size)

    _clean("trainer set-up on a CPU", lambda: setup(0))
    _clean("trainer set-up on 2 GPUs", lambda: setup(2))
