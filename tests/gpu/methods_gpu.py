"""On a CUDA GPU: every method/strategy through the real `finetune run` (torchrun), and the memory planner
against measured peaks. Driven by tests/gpu/run_methods_gpu.sh; never collected by pytest (no test_ prefix).

    python tests/gpu/methods_gpu.py --phase methods --out $OUT [--only qlora_merge,fsdp_full,...]
    python tests/gpu/methods_gpu.py --phase calib --out $OUT [--calib W1:2:0,W3:4:0,...]

methods: a model with Llama-3.2-1B's exact config (bench/workloads.py W3: 16 layers, hidden 2048, 128k vocab,
random bf16 init, save_pretrained) plus a byte-level BPE tokenizer trained on the quickstart's (asked for 2,048 tokens, gets 369)
text: its ids use the first rows of the 128k embedding, the rest exist (so memory is the real
1B's) but never occur. Each job trains on examples/quickstart/data/train.jsonl (messages, ChatML), packed into
2048-token rows, globalBatchSize 8, micro-batch and checkpointing `auto` (the planner's), 8 steps. For each:
`finetune plan` (its prediction), `finetune run`, losses from metrics.jsonl, peak from the manifest's
`peak_memory_gib`, and a reload (PeftModel.from_pretrained for adapters, AutoModelForCausalLM.from_pretrained
for full and merged weights) whose loss on the answers of 48 training examples (each alone; the trainer masks
prompts) must be finite and below the untrained base's.

calib: bench/ours.py's run_ours (the recipe fed pre-tokenized synthetic rows, bench/workloads.py) at explicit
shapes `W:micro:ckpt`; records torch.cuda.max_memory_allocated beside planner.estimate for that shape.

Writes <out>/methods-gpu.json or <out>/planner-calib.json after every item, so a run cut short still reports.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
QUICKSTART = REPO / "examples" / "quickstart" / "data" / "train.jsonl"
T0 = time.perf_counter()

# name -> (method, strategy, cpuOffload, mergeAdapter, learning rate); "_unpacked": packing off (padding-free)
METHODS = {
    "qlora_merge": ("qlora", "auto", False, True, 1e-3),
    "lora_packed": ("lora", "auto", False, False, 1e-3),
    "lora_unpacked": ("lora", "auto", False, False, 1e-3),
    "full_auto": ("full", "auto", False, False, 1e-4),  # FSDP2 on one GPU, the default for full fine-tuning
    "full_fsdp": ("full", "fsdp", False, False, 1e-4),
    "full_zero2": ("full", "deepspeed-zero2", False, False, 1e-4),
    "full_zero3_offload": ("full", "deepspeed-zero3", True, False, 1e-4),
}


def log(s: str) -> None:
    print(f"[gpu {time.perf_counter() - T0:6.0f}s] {s}", flush=True)


def build_1b(root: Path) -> Path:
    """bench's W3 model (Llama-3.2-1B config) + a 2,048-token tokenizer trained on the quickstart text."""
    from workloads import WORKLOADS, build_model_dir

    from finetune_trainer.tiny_model import texts_of_jsonl, train_tokenizer

    d = build_model_dir(WORKLOADS["W3"], root / "W3")
    if not (d / "tokenizer.json").exists():
        train_tokenizer(texts_of_jsonl([QUICKSTART]), vocab_size=2048).save_pretrained(d)
    return d


def job_yaml(name: str, model_dir: Path, out_dir: Path) -> str:
    method, strategy, offload, merge, lr = METHODS[name]
    lora = "\n    lora: {rank: 16, alpha: 32, dropout: 0.0, targetModules: all-linear}" if "lora" in method else ""
    return f"""apiVersion: finetune.io/v1alpha1
kind: FineTuneJob
metadata:
  name: gpu-{name.replace('_', '-')}
spec:
  model:
    path: {model_dir}
    dtype: bfloat16
  dataset:
    paths: [{QUICKSTART}]
    format: messages
    maxLength: 2048
    packing: {str("unpacked" not in name).lower()}
  method:
    type: {method}{lora}
  distributed:
    strategy: {strategy}
    cpuOffload: {str(offload).lower()}
  training:
    maxSteps: 8
    learningRate: {lr}
    scheduler: constant
    warmupRatio: 0.0
    globalBatchSize: 8
    logEverySteps: 1
  output:
    path: {out_dir}
    saveEverySteps: 1000
    mergeAdapter: {str(merge).lower()}
"""


def sample_ids(model_dir: Path, n: int = 48):
    """Training examples, ChatML-rendered as the trainer renders them, one tensor each (documents are scored
    alone, as packing with per-document attention trained them: positions restart at 0)."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    out = []
    for line in QUICKSTART.read_text().splitlines()[:n]:
        msgs = json.loads(line)["messages"]
        prompt = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        text = tok.apply_chat_template(msgs, tokenize=False)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * n_prompt + ids[n_prompt:]  # the answer only, as the trainer's labels (it masks prompts)
        out.append((torch.tensor([ids], device="cuda"), torch.tensor([labels], device="cuda")))
    return out


def lm_loss(model, docs) -> float:
    """Token-weighted mean next-token loss over the answer tokens of `docs`."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in docs:
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


def reload_check(kind: str, model_dir: Path, out: Path, ids) -> dict:
    """Reload the output as a user would and compare its loss on training text with the untrained base's."""
    import torch
    from transformers import AutoModelForCausalLM

    res: dict = {}
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    res["base_loss"] = lm_loss(base, ids)
    if kind == "adapter":
        from peft import PeftModel

        m = PeftModel.from_pretrained(base, out).eval()
        res["reloaded_loss"] = lm_loss(m, ids)
        res["reloaded_as"] = "PeftModel.from_pretrained"
        del m
    else:
        del base
        gc.collect()
        torch.cuda.empty_cache()
        m = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).cuda().eval()
        res["reloaded_loss"] = lm_loss(m, ids)
        res["reloaded_as"] = "AutoModelForCausalLM.from_pretrained"
        del m
    base = None
    gc.collect()
    torch.cuda.empty_cache()
    res["ok"] = math.isfinite(res["reloaded_loss"]) and res["reloaded_loss"] < res["base_loss"]
    return res


def run_cli(args: list[str], timeout: float, logf: Path) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "finetune_cli.main", *args]
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, text = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {timeout:.0f}s"
    text = text if isinstance(text, str) else text.decode(errors="replace")
    with open(logf, "a") as f:
        f.write(f"\n===== finetune {' '.join(args)}  (rc {rc}, {time.perf_counter() - t:.0f}s)\n{text}\n")
    return rc, text


def methods_phase(names: list[str], out: Path, deadline: float) -> None:
    import torch

    work = Path("/tmp/gpu-methods")
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_1b(Path("/tmp/gpu-models"))
    log(f"1B model + tokenizer at {model_dir}")
    ids = sample_ids(model_dir)
    logf = out / "methods-gpu-runs.log"
    doc = {"device": torch.cuda.get_device_name(0), "gpu_total_gib": torch.cuda.get_device_properties(0).total_memory
           / 2 ** 30, "model": "Llama-3.2-1B config (bench/workloads.py W3, 128256 vocab, random bf16) + 2048-token "
           "BPE tokenizer trained on examples/quickstart/data/train.jsonl", "data": str(QUICKSTART.relative_to(REPO)),
           "results": {}}
    path = out / "methods-gpu.json"
    for name in names:
        left = deadline - time.perf_counter()
        r: dict = {"method": METHODS[name][0], "strategy": METHODS[name][1], "cpu_offload": METHODS[name][2],
                   "merge_adapter": METHODS[name][3]}
        doc["results"][name] = r
        if left < 60:
            r["skipped"] = f"time budget ({left:.0f}s left)"
            log(f"{name}: skipped, {left:.0f}s left")
            continue
        jdir = work / name
        shutil.rmtree(jdir, ignore_errors=True)
        jdir.mkdir(parents=True)
        spec = jdir / "job.yaml"
        spec.write_text(job_yaml(name, model_dir, jdir / "out"))
        r["job_yaml"] = spec.read_text()
        try:
            rc, text = run_cli(["plan", str(spec)], 120, logf)
            r["plan_output"] = text.strip().splitlines()[-6:]
            est = [ln for ln in text.splitlines() if "estimate per GPU" in ln]
            if est:
                r["planned_total_gib"] = float(est[0].rsplit("total", 1)[1])
            log(f"{name}: plan rc {rc}: {' | '.join(r['plan_output'][:4])}")
            t = time.perf_counter()
            rc, text = run_cli(["run", str(spec)], max(180.0, deadline - time.perf_counter() - 30), logf)
            r["run_rc"], r["run_seconds"] = rc, round(time.perf_counter() - t, 1)
            r["run_tail"] = text.strip().splitlines()[-12:]
            outd = jdir / "out"
            rows = [json.loads(x) for x in (outd / "metrics.jsonl").read_text().splitlines() if x] \
                if (outd / "metrics.jsonl").exists() else []
            losses = [x["loss"] for x in rows if "loss" in x]
            r["losses"] = [round(x, 4) for x in losses]
            r["launch_line"] = next((ln for ln in text.splitlines() if ln.startswith("launch:")), None)
            r["model_line"] = next((ln for ln in text.splitlines() if ln.startswith("model:")), None)
            if losses:
                k = min(2, len(losses))
                r["loss_first"], r["loss_last"] = losses[0], losses[-1]
                r["loss_falling"] = sum(losses[-k:]) / k < sum(losses[:k]) / k
                r["losses_finite"] = all(math.isfinite(x) for x in losses)
            if rc == 0:
                man = json.loads((outd / "manifest.json").read_text())
                r["peak_memory_gib"] = man["metrics"].get("peak_memory_gib")
                r["strategy_ran"] = man.get("launch", {}).get("strategy")
                if r.get("planned_total_gib") and r["peak_memory_gib"]:
                    r["plan_error_pct"] = round(100 * (r["planned_total_gib"] - r["peak_memory_gib"])
                                                / r["peak_memory_gib"], 1)
                kind = "adapter" if "lora" in r["method"] else "full"
                r["reload"] = reload_check(kind, model_dir, outd, ids)
                if METHODS[name][3]:
                    r["reload_merged"] = reload_check("full", model_dir, outd / "merged", ids)
                r["files"] = sorted(p.name for p in outd.iterdir())
            log(f"{name}: rc {rc} in {r['run_seconds']}s, losses {r.get('losses')}, peak "
                f"{r.get('peak_memory_gib')} GiB vs planned {r.get('planned_total_gib')}, reload {r.get('reload')}"
                + (f", merged {r.get('reload_merged')}" if "reload_merged" in r else ""))
            if rc != 0:
                log(f"{name}: FAILED: " + "\n".join(r["run_tail"]))
        except Exception as e:  # noqa: BLE001 - record, go on with the next method
            r["error"] = f"{type(e).__name__}: {e} | {traceback.format_exc()[-1500:]}"
            log(f"{name}: error {r['error']}")
        shutil.rmtree(jdir / "out" / "checkpoints", ignore_errors=True)  # disk: fp32 + optimizer state
        for f in (jdir / "out").glob("*.safetensors"):
            f.unlink()
        shutil.rmtree(jdir / "out" / "merged", ignore_errors=True)
        doc["wall_seconds"] = round(time.perf_counter() - T0)
        path.write_text(json.dumps(doc, indent=1))
    log(f"wrote {path}")


def calib_phase(shapes: list[tuple[str, int, bool]], out: Path, deadline: float) -> None:
    """Measured peak (run_ours, 3 steps, accumulation 1) vs planner.estimate at the same shape."""
    import torch
    from ours import run_ours
    from workloads import WORKLOADS, build_model_dir, synthetic_examples

    from finetune_plan import memory as planner
    from finetune_trainer.data import pack_examples

    total = torch.cuda.get_device_properties(0).total_memory
    doc = {"device": torch.cuda.get_device_name(0), "gpu_total_gib": total / 2 ** 30,
           "how": "bench/ours.py run_ours: recipe.run on packed synthetic rows (bench/workloads.py), 3 steps, "
                  "accumulation 1; measured = torch.cuda.max_memory_allocated over load + steps",
           "rows": []}
    path = out / "planner-calib.json"
    packed_cache: dict = {}
    for wid, micro, ck in shapes:
        w = WORKLOADS[wid]
        row = {"workload": wid, "method": w.method, "micro_rows": micro, "seq_len": w.max_length, "checkpointing": ck}
        doc["rows"].append(row)
        left = deadline - time.perf_counter()
        if left < 45:
            row["skipped"] = f"time budget ({left:.0f}s left)"
            continue
        m = planner.ModelShape.from_config(w.config)
        wl = planner.Workload(method=w.method, strategy="ddp", world=1, seq_len=w.max_length, gpu_bytes=total)
        row["predicted_gib_before"] = planner.estimate(m, wl, micro, ck).as_gib()
        mdir = build_model_dir(w, Path("/tmp/gpu-models") / ("8B" if wid in ("W1", "W2") else wid))
        if wid not in packed_cache:
            ex = synthetic_examples(1500, 42, vocab=w.config["vocab_size"], max_length=w.max_length)
            packed_cache[wid] = pack_examples(ex, w.max_length, seed=42)
        try:
            t = time.perf_counter()
            r = run_ours(w, mdir, packed_cache[wid], Path("/tmp/gpu-calib") / f"{wid}-{micro}-{int(ck)}", steps=3,
                         lr=2e-4, warmup_ratio=0.0, seed=42, global_batch=micro, micro=micro, checkpointing=ck)
            row["measured_gib"] = round(r["peak_alloc_gib"], 2)
            row["reserved_gib"] = round(r["peak_reserved_gib"], 2)
            row["losses"] = [round(s["loss"], 4) for s in r["steps"]]
            row["seconds"] = round(time.perf_counter() - t, 1)
        except torch.OutOfMemoryError as e:
            row["measured_gib"] = None
            row["error"] = f"OOM: {str(e)[:300]}"
        except Exception as e:  # noqa: BLE001
            row["error"] = f"{type(e).__name__}: {e} | {traceback.format_exc()[-1200:]}"
        gc.collect()
        torch.cuda.empty_cache()
        shutil.rmtree(Path("/tmp/gpu-calib"), ignore_errors=True)
        log(f"calib {row}")
        doc["wall_seconds"] = round(time.perf_counter() - T0)
        path.write_text(json.dumps(doc, indent=1))
    log(f"wrote {path}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=["methods", "calib"], required=True)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/out"))
    ap.add_argument("--only", default=",".join(METHODS))
    ap.add_argument("--calib", default="W3:2:0,W3:4:0,W3:8:1")
    ap.add_argument("--deadline-s", type=float, default=500, help="stop starting new items after this (from start)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = T0 + a.deadline_s
    if a.phase == "methods":
        methods_phase([n for n in a.only.split(",") if n], out, deadline)
    else:
        shapes = [(s.split(":")[0], int(s.split(":")[1]), s.split(":")[2] == "1") for s in a.calib.split(",") if s]
        calib_phase(shapes, out, deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
