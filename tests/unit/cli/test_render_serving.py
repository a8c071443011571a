"""`finetune render --serving`: the vLLM command and an InferenceService a user can pipe to kubectl."""

from pathlib import Path

import yaml

from finetune_cli.main import main

REPO = Path(__file__).resolve().parents[3]


def test_render_serving_prints_the_command_and_an_applyable_inference_service(capsys):
    assert main(["render", str(REPO / "examples" / "cluster" / "lora-hub-1gpu.yaml"), "--serving"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Serving llama-lora once it has succeeded and condition ReadyToServe is True "
                          "(spec.serving.gate: {'maxEvalLoss': 1.2}).")
    assert ("# vLLM, with the trainer pod's mounts: vllm serve meta-llama/Llama-3.2-1B-Instruct --enable-lora "
            "--lora-modules llama-lora=/mnt/output/llama-lora --max-lora-rank 16") in out
    isvc = yaml.safe_load(out)  # the comments are comments: one YAML document
    assert isvc["kind"] == "InferenceService"
    assert isvc["spec"]["predictor"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "llama-lora-output"
