"""The multi-GPU runs (issues 8, 16), each through `finetune run` — the trainer's launcher starting the same
workers the operator's pods run (`finetune-train`):

- W4: Llama-3.1-8B full fine-tune on N GPUs, FSDP2 and DeepSpeed ZeRO-3 side by side, to the end (tokens/s/GPU,
  MFU, peak memory per GPU, the two strategies' losses, the output loaded back with `from_pretrained`, the
  wall-clock from the last step to manifest.json);
- W5: W1's LoRA on 1 GPU and on N GPUs (DDP) in the same lease: scaling = tok/s(N) / (N x tok/s(1));
- the memory planner's prediction (`finetune plan`) beside every measured peak;
- resume: an N-GPU run stopped by SIGTERM (as a pod deletion sends it) after step k, run again, against the
  same run uninterrupted.

    python bench/multi_gpu.py --gpus 2 [--runs w4,w5,resume] [--strategies fsdp,deepspeed-zero3] [--out $OUT]
    python bench/multi_gpu.py --gpus 2 --small # the same runs on Llama-3.2-1B's architecture (a quick GPU check)
    python bench/multi_gpu.py --smoke          # the harness on 2 CPU processes with a 2-layer model (~2 min)

The model is the real architecture's config with random bf16 weights (bench/workloads.py); the data is text
written as prompt-completion JSONL whose tokenized lengths follow benchmark.md's distribution, with a small BPE
tokenizer trained on its words saved beside the model (the ids it uses are a subset of the 128k vocabulary:
throughput does not depend on which ids). Counting is benchmark.md's: tokens/s/GPU over steady-state steps (the
trainer's own per-step figure, after `--warmup-steps`), MFU with T = the token-weighted mean document length.
Writes `<out>/multi-gpu-<device>-<date>.json` with the commands and every job spec.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import PEAK, doc_len, flops_per_token  # noqa: E402
from workloads import (LLAMA_31_8B, LLAMA_31_70B, LLAMA_32_1B, WORKLOADS, Workload, build_model_dir,  # noqa: E402
                       smoke, synthetic_examples)

W4 = Workload("W4", "Llama-3.1-8B", LLAMA_31_8B, "full")
W5 = replace(WORKLOADS["W1"], id="W5")
W6 = replace(WORKLOADS["W1"], id="W6", model="Llama-3.1-70B", config=LLAMA_31_70B)
WORDS = 1500  # distinct words, each one token of the tokenizer trained on them
T0 = time.perf_counter()


def log(s: str) -> None:
    print(f"[multi {time.perf_counter() - T0:6.0f}s] {s}", flush=True)


def write_data(path: Path, n: int, seed: int, max_length: int) -> list[int]:
    """prompt-completion JSONL with benchmark.md's lengths (in words ~ tokens); returns the document lengths."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(WORDS)]
    lengths = [len(e["input_ids"]) for e in synthetic_examples(n, seed, vocab=WORDS + 256,
                                                               max_length=max_length - 8)]
    with path.open("w") as f:
        for length in lengths:
            words = [rng.choice(vocab) for _ in range(length)]
            cut = max(1, int(length * rng.uniform(0.2, 0.8)))
            f.write(json.dumps({"prompt": " ".join(words[:cut]), "completion": " " + " ".join(words[cut:])}) + "\n")
    return lengths


def build_model(w: Workload, root: Path, data: Path, weights: bool = True) -> Path:
    """bench's random-weight model for `w` plus a word-level BPE tokenizer trained on the data; without
    `weights`, only config.json (the run fills its shards with random weights: FINETUNE_RANDOM_WEIGHTS=1)."""
    from finetune_trainer.tiny_model import texts_of_jsonl, train_tokenizer

    if weights:
        d = build_model_dir(w, root / w.id)
    else:
        from transformers import LlamaConfig

        d = root / w.id
        d.mkdir(parents=True, exist_ok=True)
        LlamaConfig(**w.config).save_pretrained(d)
    if not (d / "tokenizer.json").exists():
        train_tokenizer(texts_of_jsonl([data])[:4000], vocab_size=min(WORDS + 600, w.config["vocab_size"])
                        ).save_pretrained(d)
    return d


def job_yaml(name: str, w: Workload, model_dir: Path, data: Path, out: Path, *, gpus: int, strategy: str,
             steps: int, micro: int | str, accumulation: int | str, checkpointing: bool | str, save_every: int,
             smoke_run: bool) -> str:
    method = {"type": w.method}
    if w.method == "lora":
        method["lora"] = {"rank": w.lora_rank, "alpha": w.lora_alpha, "dropout": 0.0, "targetModules": "all-linear"}
    if LORA_DROPOUT and w.method in ("lora", "qlora"):  # --lora-dropout: the same for both (QLoRA's default 0.05)
        method["lora"] = {"rank": w.lora_rank, "alpha": w.lora_alpha, "dropout": LORA_DROPOUT[0],
                          "targetModules": "all-linear"}
    spec = {
        "apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name.replace("_", "-")},
        "spec": {
            "model": {"path": str(model_dir), "dtype": "float32" if smoke_run else "bfloat16"},
            "dataset": {"paths": [str(data)], "format": "prompt-completion", "maxLength": w.max_length,
                        "packing": True},
            "method": method,
            "training": {"maxSteps": steps, "learningRate": 1e-5 if w.method == "full" else 2e-4,
                         "scheduler": "cosine", "warmupRatio": 0.1, "microBatchSize": micro,
                         "gradientAccumulation": accumulation, "gradientCheckpointing": checkpointing,
                         "logEverySteps": 1, "seed": 42},
            "distributed": {"gpusPerNode": 0 if smoke_run else gpus, "strategy": strategy},
            "output": {"path": str(out), "saveEverySteps": save_every, "keepLastCheckpoints": 1},
        },
    }
    if micro != "auto" and accumulation != "auto":
        spec["spec"]["training"]["globalBatchSize"] = micro * accumulation * gpus
    return json.dumps(spec, indent=1)


LORA_DROPOUT: list = []  # set by --lora-dropout
RANDOM_WEIGHTS: dict = {}  # set for W6: FINETUNE_RANDOM_WEIGHTS=1 (a 70B model's weights do not fit the disk)


def run_env(gpus: int, smoke_run: bool) -> dict:
    """The environment for `finetune run` on the first `gpus` GPUs (or that many CPU processes with --smoke)."""
    env = dict(os.environ, **RANDOM_WEIGHTS)
    if smoke_run:
        env["FINETUNE_CPU_PROCESSES"] = str(gpus)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in range(gpus))
    return env


def finetune(args: list[str], gpus: int, smoke_run: bool, logf: Path, timeout: float = 1800):
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "finetune_cli.main", *args], capture_output=True, text=True,
                       timeout=timeout, env=run_env(gpus, smoke_run))
    with logf.open("a") as f:
        f.write(f"\n===== finetune {' '.join(args)} (gpus {gpus}; rc {p.returncode}, {time.perf_counter() - t:.0f}s)\n"
                f"{p.stdout}{p.stderr}\n")
    return p.returncode, p.stdout + p.stderr


def history(out: Path) -> list[dict]:
    f = out / "metrics.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines() if x] if f.exists() else []


def reload_output(out: Path, smoke_run: bool) -> dict:
    """Load the written full weights with `from_pretrained` (as a user would) and check them."""
    import torch
    from transformers import AutoModelForCausalLM

    t = time.perf_counter()
    m = AutoModelForCausalLM.from_pretrained(out, device_map="cpu" if smoke_run else "cuda:0")
    finite = all(bool(torch.isfinite(p).all()) for p in list(m.parameters())[:8])
    res = {"loaded": True, "dtype": str(m.dtype), "parameters": sum(p.numel() for p in m.parameters()),
           "first_tensors_finite": finite, "seconds": round(time.perf_counter() - t, 1)}
    del m
    if not smoke_run:
        torch.cuda.empty_cache()
    return res


def reload_adapter(out: Path, w: Workload) -> dict:
    """Read the written adapter back as peft would (config + tensors): every adapted layer there, finite."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import load_file

    conf = LoraConfig.from_pretrained(out)
    t = load_file(out / "adapter_model.safetensors")
    layers = w.config["num_hidden_layers"]
    return {"loaded": True, "rank": conf.r, "tensors": len(t), "expected_tensors": layers * 7 * 2,
            "finite": all(bool(torch.isfinite(x).all()) for x in t.values()),
            "lora_B_nonzero": any(bool(x.abs().sum() > 0) for k, x in t.items() if "lora_B" in k)}


def one_run(name: str, w: Workload, model_dir: Path, data: Path, work: Path, logf: Path, *, gpus: int,
            strategy: str, steps: int, micro, accumulation, checkpointing, warmup: int, fpt: float,
            smoke_run: bool, check_load: bool = False, check_adapter: bool = False) -> dict:
    """Plan, run and measure one job; the outputs are deleted afterwards (disk), the metrics kept."""
    jdir = work / name
    shutil.rmtree(jdir, ignore_errors=True)
    jdir.mkdir(parents=True)
    spec = jdir / "job.yaml"
    spec.write_text(job_yaml(name, w, model_dir, data, jdir / "out", gpus=gpus, strategy=strategy, steps=steps,
                             micro=micro, accumulation=accumulation, checkpointing=checkpointing,
                             save_every=10_000, smoke_run=smoke_run))
    r: dict = {"gpus": gpus, "strategy": strategy, "job_yaml": spec.read_text()}
    plan_args = ["plan", str(spec), "--gpus", str(gpus)] + (["--gpu-memory", "80GiB"] if smoke_run else [])
    rc, text = finetune(plan_args, gpus, smoke_run, logf, 300)
    r["plan"] = text.strip().splitlines()[-8:]
    est = [ln for ln in text.splitlines() if "memory per GPU" in ln]
    r["planned_gib"] = float(est[0].rsplit("total", 1)[1]) if est else None
    disk = [ln for ln in text.splitlines() if ln.strip().startswith("disk:")]
    r["planned_disk"] = disk[0].strip() if disk else None
    t = time.perf_counter()
    rc, text = finetune(["run", str(spec)], gpus, smoke_run, logf)
    r["rc"], r["seconds"] = rc, round(time.perf_counter() - t)
    r["launch"] = next((ln for ln in text.splitlines() if ln.startswith("launch:")), None)
    r["model_line"] = next((ln for ln in text.splitlines() if ln.startswith("model:")), None)
    rows = [x for x in history(jdir / "out") if "tokens_per_s" in x]
    r["rank_errors"] = [ln for ln in text.splitlines() if ln.startswith("error:")]
    r["losses"] = [round(x["loss"], 5) for x in rows]
    steady = rows[warmup:] or rows
    if steady:
        # packed rows: tokens per step are near constant, so the mean of per-step rates is tokens over time
        tok = sum(x["tokens_per_s"] for x in steady) / len(steady)
        r |= {"real_tok_s": round(tok, 1), "real_tok_s_per_gpu": round(tok / gpus, 1),
              "trainable_tok_s_per_gpu": round(sum(x["trainable_tokens_per_s"] for x in steady) / len(steady) / gpus, 1),
              "mfu": round(tok / gpus * fpt / PEAK, 4), "steps_timed": len(steady)}
    man = jdir / "out" / "manifest.json"
    if man.exists():
        last = max((x.get("time", 0) for x in rows), default=0)
        r["last_step_to_manifest_s"] = round(man.stat().st_mtime - last, 1) if last else None
        r["output_files"] = sorted(json.loads(man.read_text())["files"])[:40]
        r["output_gib"] = round(sum(f.stat().st_size for f in (jdir / "out").iterdir() if f.is_file()) / 2 ** 30, 2)
        if check_load:
            r["reload"] = reload_output(jdir / "out", smoke_run)
        if check_adapter:
            r["adapter"] = reload_adapter(jdir / "out", w)
        m = json.loads(man.read_text())["metrics"]
        r["peak_gib"] = m.get("peak_memory_gib")
        r["peak_gib_per_rank"] = m.get("peak_memory_gib_per_rank")
        if r["planned_gib"] and r["peak_gib_per_rank"]:
            r["plan_error_pct"] = round(100 * (r["planned_gib"] - max(r["peak_gib_per_rank"])) /
                                        max(r["peak_gib_per_rank"]), 1)
    else:
        r["tail"] = text.strip().splitlines()[-15:]
    shutil.rmtree(jdir / "out", ignore_errors=True)
    log(f"{name}: rc {rc} {r.get('real_tok_s_per_gpu')} tok/s/GPU, MFU {r.get('mfu')}, peak/rank "
        f"{r.get('peak_gib_per_rank')} vs plan {r.get('planned_gib')}, losses {r['losses'][:3]}..{r['losses'][-2:]}")
    return r


def resume_run(w: Workload, model_dir: Path, data: Path, work: Path, logf: Path, *, gpus: int, steps: int,
               stop_after: int, smoke_run: bool) -> dict:
    """The same N-process job twice: uninterrupted, and SIGTERM'd after `stop_after` steps then run again."""
    kw = dict(gpus=gpus, strategy="auto", steps=steps, micro=2, accumulation=2, checkpointing=False,
              save_every=max(1, stop_after // 2), smoke_run=smoke_run)
    res: dict = {"gpus": gpus, "steps": steps, "stop_after": stop_after}
    outs = {}
    for name in ("uninterrupted", "preempted"):
        jdir = work / f"resume_{name}"
        shutil.rmtree(jdir, ignore_errors=True)
        jdir.mkdir(parents=True)
        (jdir / "job.yaml").write_text(job_yaml(f"resume-{name}", w, model_dir, data, jdir / "out", **kw))
        outs[name] = jdir
    rc, _ = finetune(["run", str(outs["uninterrupted"] / "job.yaml")], gpus, smoke_run, logf)
    res["uninterrupted_rc"] = rc
    proc = subprocess.Popen([sys.executable, "-m", "finetune_cli.main", "run", str(outs["preempted"] / "job.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=run_env(gpus, smoke_run))
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"step {stop_after}/"):
            os.killpg(proc.pid, signal.SIGTERM)  # as the kubelet stops a pod
            break
    seen.append(proc.stdout.read())
    proc.wait(timeout=600)
    with logf.open("a") as f:
        f.write("\n===== resume: preempted run\n" + "".join(seen))
    res["preempted_rc"] = proc.returncode
    res["saved_on_sigterm"] = any("SIGTERM: saved checkpoint at step" in s for s in seen)
    rc, text = finetune(["run", str(outs["preempted"] / "job.yaml")], gpus, smoke_run, logf)
    res["resumed_rc"] = rc
    res["resumed_line"] = next((ln for ln in text.splitlines() if ln.startswith("resuming from")), None)
    a = {x["step"]: x["loss"] for x in history(outs["uninterrupted"] / "out") if "loss" in x}
    b = {x["step"]: x["loss"] for x in history(outs["preempted"] / "out") if "loss" in x}
    res["losses_uninterrupted"] = [round(a[k], 5) for k in sorted(a)]
    res["losses_resumed"] = [round(b[k], 5) for k in sorted(b)]
    common = sorted(set(a) & set(b))
    res["each_step_once"] = sorted(b) == list(range(1, steps + 1))
    res["max_rel_diff"] = max(abs(a[k] - b[k]) / abs(a[k]) for k in common) if common else None
    for jdir in outs.values():
        shutil.rmtree(jdir / "out" / "checkpoints", ignore_errors=True)
    log(f"resume: {res['resumed_line']}; max relative loss difference {res['max_rel_diff']}, "
        f"each step once {res['each_step_once']}")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpus", type=int, default=2)
    ap.add_argument("--runs", default="w5,w4,resume")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--work", default="/tmp/multi-gpu")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--examples", type=int, default=2400)
    ap.add_argument("--smoke", action="store_true", help="2-layer model, CPU processes: checks the harness only")
    ap.add_argument("--small", action="store_true", help="Llama-3.2-1B's architecture instead of 3.1-8B's")
    ap.add_argument("--strategies", default="fsdp,deepspeed-zero3", help="W4's strategies, in order")
    ap.add_argument("--w6-checkpointing", default="auto", choices=["auto", "true", "false"],
                    help="W6's spec.training.gradientCheckpointing (auto: the planner's)")
    ap.add_argument("--w4-shape", default="auto",
                    help="W4's micro-batch and accumulation as MICRO,ACCUM (auto: the planner's)")
    ap.add_argument("--w6-micro", default="auto", help="W6's spec.training.microBatchSize (auto: the planner's)")
    ap.add_argument("--lora-dropout", type=float, default=None,
                    help="spec.method.lora.dropout for LoRA and QLoRA runs (default: LoRA 0, QLoRA the spec's 0.05)")
    a = ap.parse_args(argv)
    if a.lora_dropout is not None:
        LORA_DROPOUT.append(a.lora_dropout)
    import torch

    out, work = Path(a.out), Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    device = "cpu" if a.smoke else torch.cuda.get_device_name(0)
    short = "cpu-smoke" if a.smoke else next((k for k in ("h200", "h100") if k in device.lower()), "gpu")
    short += "-small" if a.small else ""
    short += "" if a.runs == "w5,w4,resume" else "-" + a.runs.replace(",", "-")
    short += "" if a.strategies == "fsdp,deepspeed-zero3" else "-" + a.strategies.replace(",", "-")
    short += "" if a.w6_checkpointing == "auto" else f"-ckpt-{a.w6_checkpointing}"
    short += "" if a.w6_micro == "auto" else f"-micro-{a.w6_micro}"
    short += "" if a.w4_shape == "auto" else f"-shape-{a.w4_shape.replace(',', 'x')}"
    short += "" if a.lora_dropout is None else f"-dropout-{a.lora_dropout:g}"
    date = _dt.date.today().isoformat()
    path = out / f"multi-gpu-{short}-{date}.json"
    logf = out / f"multi-gpu-{short}-{date}.log"
    w4, w5 = (smoke(W4), smoke(W5)) if a.smoke else (W4, W5)
    if a.small:
        w4 = replace(W4, id="W4-1B", model="Llama-3.2-1B", config=LLAMA_32_1B)
        w5 = replace(W5, id="W5-1B", model="Llama-3.2-1B", config=LLAMA_32_1B)
    doc: dict = {"device": device, "n_gpus": a.gpus, "date": date,
                 "command": "python " + " ".join(shlex.quote(x) for x in [sys.argv[0], *(argv or sys.argv[1:])]),
                 "versions": {"torch": torch.__version__}, "results": {}}
    models = Path("/tmp/multi-models" + ("-smoke" if a.smoke else ""))
    data = work / "data.jsonl"
    lengths = write_data(data, a.examples, 42, w5.max_length)
    t_len = sum(n * n for n in lengths) / sum(lengths)
    doc["data"] = {"examples": len(lengths), "mean_words": round(sum(lengths) / len(lengths)),
                   "doc_len_token_weighted_words": round(t_len)}
    save = lambda: path.write_text(json.dumps(doc, indent=1))  # noqa: E731
    runs = a.runs.split(",")
    w6_ck = {"auto": "auto", "true": True, "false": False}[a.w6_checkpointing]
    w6_micro = a.w6_micro if a.w6_micro == "auto" else int(a.w6_micro)
    common = dict(steps=a.steps, warmup=a.warmup_steps, smoke_run=a.smoke)
    if "w5" in runs:
        md = build_model(w5, models, data)
        fpt = flops_per_token(w5, t_len)
        res = doc["results"].setdefault(w5.id, {})
        shape = dict(micro=4, accumulation=3, checkpointing=False)  # per GPU the same: N GPUs, N x the batch
        res["1gpu"] = one_run("w5_1gpu", w5, md, data, work, logf, gpus=1, strategy="auto", fpt=fpt, **shape, **common)
        save()
        if a.gpus > 1:
            res[f"{a.gpus}gpu_ddp"] = one_run(f"w5_{a.gpus}gpu", w5, md, data, work, logf, gpus=a.gpus,
                                              strategy="ddp", fpt=fpt, **shape, **common)
            one, many = res["1gpu"].get("real_tok_s"), res[f"{a.gpus}gpu_ddp"].get("real_tok_s")
            if one and many:
                res["scaling"] = round(many / (a.gpus * one), 4)
                log(f"W5 scaling on {a.gpus} GPUs: {res['scaling']}")
        save()
    if "w4" in runs:
        md = build_model(w4, models, data)
        fpt = flops_per_token(w4, t_len)
        res = doc["results"].setdefault(w4.id, {})
        w4_micro, w4_accum = ("auto", "auto") if a.w4_shape == "auto" else map(int, a.w4_shape.split(","))
        for strat in [s for s in a.strategies.split(",") if not (a.smoke and s.startswith("deepspeed"))]:
            res[strat] = one_run(f"w4_{strat}", w4, md, data, work, logf, gpus=a.gpus, strategy=strat, fpt=fpt,
                                 micro=w4_micro, accumulation=w4_accum,
                                 checkpointing="auto" if a.w4_shape == "auto" else False, check_load=True, **common)
            save()
        la, lb = res.get("fsdp", {}).get("losses"), res.get("deepspeed-zero3", {}).get("losses")
        if la and lb:
            n = min(len(la), len(lb))
            res["loss_rel_diff_mean"] = round(abs(sum(la[:n]) - sum(lb[:n])) / abs(sum(la[:n])), 5)
            res["loss_rel_diff_max_step"] = round(max(abs(x - y) / abs(x) for x, y in zip(la, lb)), 5)
        save()
    if "w6" in runs:  # the seeds' claim: 70B LoRA on one 2xH200 node (FSDP2-sharded frozen base)
        w6 = smoke(W6) if a.smoke else W6
        md = build_model(w6, models, data, weights=False)
        RANDOM_WEIGHTS["FINETUNE_RANDOM_WEIGHTS"] = "1"
        res = doc["results"].setdefault(w6.id, {})
        res["lora_fsdp"] = one_run("w6_lora", w6, md, data, work, logf, gpus=a.gpus,
                                   strategy="fsdp" if a.smoke else "auto",  # on CPUs auto would not shard
                                   fpt=flops_per_token(w6, t_len), micro="auto", accumulation="auto",
                                   checkpointing=w6_ck, check_adapter=True, **common)
        RANDOM_WEIGHTS.clear()
        save()
    if "w6q" in runs and not a.smoke:  # ... and QLoRA on one GPU (random NF4 base, quantised on the GPU)
        w6q = replace(W6, method="qlora")
        md = build_model(w6q, models, data, weights=False)
        RANDOM_WEIGHTS["FINETUNE_RANDOM_WEIGHTS"] = "1"
        res = doc["results"].setdefault("W6", {})
        res["qlora_1gpu"] = one_run("w6_qlora", w6q, md, data, work, logf, gpus=1, strategy="auto",
                                    fpt=flops_per_token(w6q, t_len), micro=w6_micro, accumulation="auto",
                                    checkpointing=w6_ck, check_adapter=True, **common)
        RANDOM_WEIGHTS.clear()
        save()
    if "resume" in runs:
        md = build_model(w5, models, data)
        doc["results"]["resume"] = resume_run(w5, md, data, work, logf, gpus=a.gpus, steps=max(8, a.steps),
                                              stop_after=4, smoke_run=a.smoke)
        save()
    doc["wall_seconds"] = round(time.perf_counter() - T0)
    save()
    log(f"wrote {path}")
    rcs = [r.get("rc", 0) for v in doc["results"].values() if isinstance(v, dict) for r in v.values()
           if isinstance(r, dict)]
    return 0 if all(rc == 0 for rc in rcs) else 1


if __name__ == "__main__":
    sys.exit(main())
