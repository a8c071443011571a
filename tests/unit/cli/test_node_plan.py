"""`finetune plan --model ... --node ...` and a spec's plan checked against the node's host memory."""

from pathlib import Path

from finetune_cli import node_plan
from finetune_cli.main import main

REPO = Path(__file__).resolve().parents[3]
JOB = """apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata: {name: big}
spec:
  model: {hubId: meta-llama/Llama-3.1-70B}
  dataset: {paths: [d.jsonl], format: messages, maxLength: 2048}
  method: {type: full}
  distributed: {gpusPerNode: 2, strategy: deepspeed-zero3, cpuOffload: true}
  output: {path: out}
"""


def test_the_node_table_names_every_method_and_strategy_and_the_assumed_host(capsys):
    assert main(["plan", "--model", "meta-llama/Llama-3.1-70B", "--node", "2xH200"]) == 0
    out = capsys.readouterr().out
    assert "meta-llama/Llama-3.1-70B: 70.6B parameters" in out
    assert "node 2xH200: 2 GPU(s) x 140 GiB, host 256 GiB (two 141GB H200s" in out
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    assert ("qlora", "ddp", "yes") in rows and ("lora", "fsdp", "yes") in rows and ("full", "fsdp+offload", "no") in rows
    assert "host: needs 1191 GiB (offloaded state) of 256" in out


def test_a_spec_whose_offloaded_state_the_host_cannot_hold_is_refused(tmp_path, capsys):
    spec = tmp_path / "job.yaml"
    spec.write_text(JOB)
    assert main(["plan", str(spec), "--node", "2xH200"]) == 2
    cap = capsys.readouterr()
    assert "host memory:   1191 GiB per node of 256 GiB at its peak (offloaded state" in cap.out
    assert "error: the node's host memory: this plan needs ~1191 GiB per node" in cap.err
    assert "spec.distributed.cpuOffload" in cap.err
    assert main(["plan", str(spec), "--node", "2xH200", "--host-memory", "2TiB"]) == 0


def test_plan_needs_a_spec_or_a_model(capsys):
    assert main(["plan"]) == 2
    assert "--model <hub id or folder> --node" in capsys.readouterr().err
    assert main(["plan", "--model", "nobody/nothing", "--node", "2xH200"]) == 2
    assert "not a hub id this planner knows" in capsys.readouterr().err


def test_docs_node_plans_is_fresh():
    want = node_plan.docs_table() + "\n"
    have = (REPO / "docs" / node_plan.DOC_FILE).read_text()
    assert have == want, "docs/node-plans.md is stale: run make plan-doc"
