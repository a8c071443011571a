"""`finetune plan`: the memory plan for a machine you do not have, printed with its estimate."""

import json

from finetune_cli.main import main

JOB = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: w}
spec:
  model: {path: model}
  dataset: {paths: [d.jsonl], format: messages, maxLength: 2048}
  method: {type: %s}
  distributed: {strategy: %s}
  output: {path: out}
"""
LLAMA_8B = {"vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": False}


def _spec(tmp_path, method="lora", strategy="auto"):
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text(json.dumps(LLAMA_8B))
    f = tmp_path / "job.yaml"
    f.write_text(JOB % (method, strategy))
    return str(f)


def test_plan_for_two_h200s_prints_strategy_batch_and_estimate(tmp_path, capsys):
    assert main(["plan", _spec(tmp_path, "full"), "--gpu-memory", "141GiB", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "plan for 2 GPU(s) x 141 GiB: full + sft" in out
    assert "(auto: DDP if it fits, else FSDP2 full shard)" in out
    assert "micro-batch:" in out and "checkpointing:" in out and "optimizer" in out and "total" in out


def test_plan_shows_the_generated_deepspeed_config(tmp_path, capsys):
    assert main(["plan", _spec(tmp_path, "full", "deepspeed-zero3"), "--gpu-memory", "80GiB", "--gpus", "2"]) == 0
    assert '"stage": 3' in capsys.readouterr().out


def test_plan_that_does_not_fit_exits_2(tmp_path, capsys):
    assert main(["plan", _spec(tmp_path, "full", "ddp"), "--gpu-memory", "80GiB", "--gpus", "1"]) == 2
    assert "the memory plan does not fit" in capsys.readouterr().err


def test_plan_without_a_gpu_asks_for_gpu_memory(tmp_path, capsys, monkeypatch):
    import finetune_trainer.local_run as launch

    monkeypatch.setattr(launch, "visible_gpus", lambda: 0)
    assert main(["plan", _spec(tmp_path)]) == 2
    assert "--gpu-memory" in capsys.readouterr().err


def test_a_memory_size_without_a_unit_is_refused_not_read_as_bytes(tmp_path, capsys):
    import pytest

    for flag, value in (("--gpu-memory", "140"), ("--gpu-memory", "lots"), ("--host-memory", "512")):
        with pytest.raises(SystemExit) as e:
            main(["plan", _spec(tmp_path, "full"), "--gpu-memory", "141GiB", flag, value])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and "with a unit (e.g. 80GiB" in err and "Traceback" not in err
    assert main(["plan", _spec(tmp_path, "full"), "--gpu-memory", "141Gi", "--gpus", "2", "--host-memory", "2TB"]) == 0
    assert "x 141 GiB" in capsys.readouterr().out


def test_counts_below_their_least_are_refused_naming_the_flag(tmp_path, capsys):
    import pytest

    for args in (["--gpus", "0"], ["--gpus", "two"], ["--global-batch", "0"], ["--max-length", "-5"]):
        with pytest.raises(SystemExit) as e:  # --gpus 0 was a ZeroDivisionError, --global-batch 0 a ValidationError
            main(["plan", _spec(tmp_path, "full"), "--gpu-memory", "141GiB", *args])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {args[0]}" in err and "Traceback" not in err and "unexpectedly" not in err
    with pytest.raises(SystemExit):
        main(["logs", "demo", "--rank", "-1"])
    assert "argument --rank: -1 is below 0" in capsys.readouterr().err
