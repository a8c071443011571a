"""The serving handoff against a real output: every path the vLLM command names exists and holds what vLLM loads.

A real `finetune run` (the quickstart's model, LoRA, merged, a serving gate) on the CPU; then the handoff built from
the run's config is checked against the folder the run wrote: the adapter (PEFT files, trained on the base the
command serves), the merged model (config, weights, tokenizer), and the gate's verdict from the run's metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune_api import load_job
from finetune_trainer.local_run import resolve_paths
from finetune_trainer.serving import handoff
from support.cli_runs import finetune, manifest, write_job


def test_the_vllm_command_names_the_outputs_actual_files(quickstart_model, tmp_path):
    path = write_job(tmp_path, quickstart_model, **{"training.maxSteps": 6, "training.evalEverySteps": None,
                                                    "output.mergeAdapter": True,
                                                    "serving": {"gate": {"maxEvalLoss": 50.0, "minExactMatch": 0.0}}})
    r = finetune("run", str(path))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = tmp_path / "out"
    h = handoff(resolve_paths(load_job(path), path), manifest(out)["metrics"])

    argv = h["vllm"]["argv"]
    assert argv[:3] == ["vllm", "serve", str(quickstart_model)] and "--enable-lora" in argv
    name, adapter = argv[argv.index("--lora-modules") + 1].split("=", 1)
    assert name == "quickstart" and Path(adapter) == out
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter_config["base_model_name_or_path"]).resolve() == Path(argv[2]).resolve()
    assert int(argv[argv.index("--max-lora-rank") + 1]) >= adapter_config["r"]
    assert (out / "adapter_model.safetensors").is_file()

    merged = Path(h["vllm_merged"]["argv"][2])
    assert merged == out / "merged"
    assert {"config.json", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    assert any(p.suffix == ".safetensors" for p in merged.iterdir())

    assert h["ready_to_serve"]["reason"] == "GatePassed", h["ready_to_serve"]
    assert h["kserve"] is None  # a local output: no claim to serve it from
    assert f"serve:       {h['vllm']['command']}" in r.stdout
    assert "ready to serve: yes (held-out evaluation meets spec.serving.gate: eval loss" in r.stdout
    assert manifest(out)["serving"] == h  # the manifest says how to serve the result
