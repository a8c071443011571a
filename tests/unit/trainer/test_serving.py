"""The serving handoff: a vLLM command and a KServe InferenceService built from the run's own paths."""

from __future__ import annotations

import copy

import pytest

from finetune_api import FineTuneJob
from finetune_api.trainer_config import TrainerConfig
from finetune_trainer.serving import handoff, output_claim

BASE = {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "tune", "namespace": "ml"},
        "spec": {"model": {"hubId": "meta-llama/Llama-3.1-8B", "revision": "v2"},
                 "dataset": {"paths": ["d.jsonl"], "format": "messages", "volume": {"claimName": "data"}},
                 "output": {"path": "runs/tune", "volume": {"create": {"size": "10Gi"}}}}}


def config(local=False, **spec) -> TrainerConfig:
    doc = copy.deepcopy(BASE)
    doc["spec"] |= spec
    job = FineTuneJob.model_validate(doc)
    if local:
        return TrainerConfig(job=job, output_dir="/home/me/out/tune", model_path=None)
    from finetune_operator.pod_config import build_trainer_config

    return build_trainer_config(job)


def test_an_adapter_on_a_hub_base_served_by_vllm_and_kserve_from_the_output_claim():
    h = handoff(config(method={"type": "lora", "lora": {"rank": 24}}))
    assert h["kind"] == "adapter" and h["adapter_path"] == "/mnt/output/runs/tune"
    assert h["vllm"]["command"] == ("vllm serve meta-llama/Llama-3.1-8B --revision v2 --enable-lora --lora-modules "
                                    "tune=/mnt/output/runs/tune --max-lora-rank 32")
    ks = h["kserve"]
    model = ks["spec"]["predictor"]["model"]
    assert ks["kind"] == "InferenceService" and ks["metadata"]["namespace"] == "ml"
    assert model["args"] == ["--model_name=tune", "--model_id=meta-llama/Llama-3.1-8B", "--model_revision=v2",
                             "--enable-lora", "--lora-modules", "tune=/mnt/output/runs/tune", "--max-lora-rank", "32"]
    assert model["volumeMounts"] == [{"name": "output", "mountPath": "/mnt/output", "readOnly": True}]
    assert ks["spec"]["predictor"]["volumes"] == [
        {"name": "output", "persistentVolumeClaim": {"claimName": "tune-output", "readOnly": True}}]
    assert h["ready_to_serve"]["reason"] == "NoGate"


def test_the_created_claim_is_the_one_the_operator_names():
    from finetune_operator import names

    assert output_claim(config()) == names.output_pvc_name("tune")
    assert output_claim(config(output={"path": "o", "volume": {"claimName": "mine"}})) == "mine"


def test_a_merged_model_is_what_kserve_serves_and_vllm_offers_both():
    h = handoff(config(output={"path": "o", "volume": {"claimName": "out"}, "mergeAdapter": True}))
    assert h["merged_path"] == "/mnt/output/o/merged"
    assert h["vllm_merged"]["argv"] == ["vllm", "serve", "/mnt/output/o/merged", "--served-model-name", "tune"]
    assert h["kserve"]["spec"]["predictor"]["model"]["args"] == ["--model_name=tune", "--model_dir=/mnt/output/o/merged"]


def test_full_weights_and_a_base_on_a_claim_with_a_sub_path():
    model = {"path": "llama", "volume": {"claimName": "models", "subPath": "hf"}}
    full = handoff(config(model=model, method={"type": "full"}))
    assert full["kind"] == "full" and full["vllm"]["argv"][:3] == ["vllm", "serve", "/mnt/output/runs/tune"]
    h = handoff(config(model=model))
    ks = h["kserve"]["spec"]["predictor"]
    assert "--model_dir=/mnt/model/llama" in ks["model"]["args"]
    assert {"name": "model", "mountPath": "/mnt/model", "readOnly": True, "subPath": "hf"} in ks["model"]["volumeMounts"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in ks["volumes"]] == ["tune-output", "models"]


def test_a_gated_base_gets_its_token_by_reference_and_qlora_says_what_it_serves_on():
    h = handoff(config(method={"type": "qlora"}, hfTokenSecretRef={"name": "hf", "key": "token"}))
    env = h["kserve"]["spec"]["predictor"]["model"]["env"]
    assert env == [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    assert any("4-bit (NF4) base" in n for n in h["notes"])


def test_a_local_output_has_a_vllm_command_and_no_kserve_manifest():
    h = handoff(config(local=True, output={"path": "out/tune"}))
    assert h["vllm"]["command"].endswith("--lora-modules tune=/home/me/out/tune --max-lora-rank 16")
    assert h["kserve"] is None


@pytest.mark.parametrize("metrics, reason", [({"final_eval_loss": 0.5, "eval_exact_match": 0.8}, "GatePassed"),
                                             ({"final_eval_loss": 2.5, "eval_exact_match": 0.8}, "GateFailed")])
def test_the_verdict_of_the_gate_is_recorded(metrics, reason):
    h = handoff(config(serving={"gate": {"maxEvalLoss": 1.0, "minExactMatch": 0.5}},
                       dataset={"paths": ["d.jsonl"], "format": "messages", "validationSplit": 0.1,
                                "volume": {"claimName": "data"}}), metrics)
    assert h["ready_to_serve"]["reason"] == reason
