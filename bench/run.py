"""Run one workload's benchmark on a GPU machine: the seed-style baseline, then our trainer, in one process.

    python bench/run.py --workload W1 [--phases loss,speed,ablation,profile] [--out bench/results]

Counting is ../shared/benchmark.md's: tokens/s = tokens over the summed wall time of the steady-state
steps (after `--warmup-steps`), trainable tokens = labels != -100 after the shift, MFU = real tokens/s x
FLOPs per token / 989.5e12 with T = the token-weighted mean document length (attention per token grows with
its own document's length), peak memory = torch.cuda.max_memory_allocated / reserved over the run.

Phases (each writes its part of the result as soon as it ends, so a run cut short still reports):
- loss: baseline and ours on identical data for 50 steps — each step the same `baseline_batch` examples
  (ours gets them packed into one row), same schedule and seed; the per-step losses must agree within 2%.
  The baseline's speed is read from the same run.
- speed: ours as a user would run it — the examples packed into `max_length` rows by data/packing.py,
  the workload's micro-batch and accumulation, every fast-path piece on by default.
- profile: two steps of ours under torch.profiler; the top kernels go to a text file beside the JSON.
- ablation: ours with pieces switched off one at a time (attention kernel, Liger, LoRA forward, checkpointing,
  micro-batch), `--ablations` to pick some.

Writes `<out>/<workload>-<device>-<date>.json` in benchmark.md's format (plus details) and the profile table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workloads import WORKLOADS, Workload, build_model_dir, smoke, synthetic_examples  # noqa: E402

PEAK = 989.5e12
# One piece changed at a time, ~24.5k tokens per optimizer step each (micro rows of max_length x accumulation).
_NO = dict(checkpointing=False)
ABLATIONS = {
    "W1": {
        "packed_sdpa_mask_no_liger_peft_lora_mb2": dict(micro=2, accumulation=6, attn="sdpa", liger_on=False,
                                                        fast_lora=False, **_NO),
        "packed_varlen_no_liger_peft_lora_mb2": dict(micro=2, accumulation=6, liger_on=False, fast_lora=False, **_NO),
        "packed_varlen_liger_peft_lora_mb2": dict(micro=2, accumulation=6, fast_lora=False, **_NO),
        "packed_varlen_liger_peft_lora_mb3": dict(micro=3, accumulation=4, fast_lora=False, **_NO),
        "packed_varlen_liger_fast_lora_mb3": dict(micro=3, accumulation=4, **_NO),
        "packed_varlen_liger_fast_lora_mb4": dict(micro=4, accumulation=3, **_NO),
        "packed_varlen_liger_fast_lora_mb4_ckpt": dict(micro=4, accumulation=3, checkpointing=True),
        "packed_varlen_no_liger_fast_lora_mb4": dict(micro=4, accumulation=3, liger_on=False, **_NO),
        "packed_varlen_liger_fast_lora_mb8_ckpt8of32": dict(micro=8, accumulation=2, checkpointing=True,
                                                            checkpoint_layers=8),
        # packing left off (a user's default): 48 examples per step (~24.6k tokens), micro-batches of 8 examples
        # padded to their longest, or run padding-free (spec.dataset.paddingFree, the default)
        "unpacked_padded_sdpa_mb8": dict(micro=8, accumulation=6, packing=False, padding_free=False, **_NO),
        "unpacked_padded_sdpa_mb4": dict(micro=4, accumulation=12, packing=False, padding_free=False, **_NO),
        "unpacked_padding_free_mb4": dict(micro=4, accumulation=12, packing=False, **_NO),
        "unpacked_padding_free_mb8": dict(micro=8, accumulation=6, packing=False, **_NO),
        "unpacked_padding_free_mb16": dict(micro=16, accumulation=3, packing=False, **_NO),
    },
    # QLoRA is chosen for memory: every row but the last checkpoints activations
    "W2": {
        "packed_varlen_no_liger_peft_lora_mb2_ckpt": dict(micro=2, accumulation=6, liger_on=False, fast_lora=False,
                                                           checkpointing=True),
        "packed_varlen_liger_peft_lora_mb2_ckpt": dict(micro=2, accumulation=6, fast_lora=False, checkpointing=True),
        "packed_varlen_liger_fast_lora_mb1_ckpt": dict(micro=1, accumulation=12, checkpointing=True),
        "packed_varlen_liger_fast_lora_mb2_ckpt": dict(micro=2, accumulation=6, checkpointing=True),
        "packed_varlen_liger_fast_lora_mb4_ckpt": dict(micro=4, accumulation=3, checkpointing=True),
        "packed_varlen_liger_fast_lora_mb4": dict(micro=4, accumulation=3, **_NO),
        # checkpointing only as many blocks as memory needs (the planner's choice when all-or-nothing overshoots)
        "packed_varlen_liger_fast_lora_mb4_ckpt8of32": dict(micro=4, accumulation=3, checkpointing=True,
                                                            checkpoint_layers=8),
        "packed_varlen_liger_fast_lora_mb4_ckpt16of32": dict(micro=4, accumulation=3, checkpointing=True,
                                                             checkpoint_layers=16),
        "packed_varlen_liger_fast_lora_mb4_ckpt24of32": dict(micro=4, accumulation=3, checkpointing=True,
                                                             checkpoint_layers=24),
    },
    # full fine-tuning on one GPU: fp32 weights under autocast (auto = single) or FSDP2 on one rank (bf16 compute)
    "W3": {
        "single_autocast_packed_varlen_mb8": dict(micro=8, accumulation=2, strategy="auto", **_NO),
        "fsdp1_packed_varlen_no_liger_mb8": dict(micro=8, accumulation=2, strategy="fsdp", liger_on=False, **_NO),
        "fsdp1_packed_varlen_liger_mb8": dict(micro=8, accumulation=2, strategy="fsdp", **_NO),
        "fsdp1_packed_varlen_liger_mb16": dict(micro=16, accumulation=1, strategy="fsdp", **_NO),
        "fsdp1_packed_varlen_liger_mb4": dict(micro=4, accumulation=4, strategy="fsdp", **_NO),
    },
}
LOSS_STEPS = 50
LR = 2e-4


def flops_per_token(w: Workload, doc_len: float) -> float:
    """benchmark.md: full 6N + 12·L·d·T; LoRA/QLoRA 4N + 12·L·d·T + 6·N_lora (N: every matmul incl. lm_head)."""
    c = w.config
    d, i, L, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    q = c["num_attention_heads"] * c["head_dim"]
    kv = c["num_key_value_heads"] * c["head_dim"]
    shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, i), (d, i), (i, d)]
    n = L * sum(a * b for a, b in shapes) + d * v
    attn = 12 * L * d * doc_len
    if w.method == "full":
        return 6 * n + attn
    n_lora = L * sum(w.lora_rank * (a + b) for a, b in shapes)
    return 4 * n + attn + 6 * n_lora


def doc_len(examples: list[dict]) -> float:
    """Token-weighted mean document length: the T of the attention term, averaged over tokens."""
    lens = [len(e["input_ids"]) for e in examples]
    return sum(n * n for n in lens) / sum(lens)


def steady(result: dict, warmup: int, fpt: float) -> dict:
    """benchmark.md's figures from per-step rows, skipping the first `warmup` steps."""
    rows = result["steps"][warmup:]
    secs = sum(r["seconds"] for r in rows)
    real = sum(r["real_tokens"] for r in rows) / secs
    return {"real_tok_s": round(real, 1), "trainable_tok_s": round(sum(r["trainable_tokens"] for r in rows) / secs, 1),
            "mfu": round(real * fpt / PEAK, 4), "peak_gib": round(result["peak_alloc_gib"], 2),
            "peak_reserved_gib": round(result["peak_reserved_gib"], 2), "steps_timed": len(rows),
            "tokens_per_step": round(sum(r["real_tokens"] for r in rows) / max(len(rows), 1))}


def loss_agreement(base: list[dict], ours: list[dict]) -> dict:
    """Relative differences of the per-step losses (ours vs baseline) over the steps both logged."""
    pairs = [(b["loss"], o["loss"]) for b, o in zip(base, ours) if b["loss"] is not None and o["loss"] is not None]
    rel = [abs(o - b) / abs(b) for b, o in pairs]
    mean_b = sum(b for b, _ in pairs) / len(pairs)
    mean_o = sum(o for _, o in pairs) / len(pairs)
    return {"steps": len(pairs), "mean_rel_diff_of_means": round(abs(mean_o - mean_b) / mean_b, 5),
            "max_step_rel_diff": round(max(rel), 5), "mean_step_rel_diff": round(sum(rel) / len(rel), 5),
            "first_loss": {"baseline": pairs[0][0], "ours": pairs[0][1]},
            "last_loss": {"baseline": pairs[-1][0], "ours": pairs[-1][1]}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="W1", choices=sorted(WORKLOADS))
    ap.add_argument("--phases", default="loss,speed,ablation,profile")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--model-dir", default="/tmp/bench-models")
    ap.add_argument("--work-dir", default="/tmp/bench-work")
    ap.add_argument("--examples", type=int, default=3000)
    ap.add_argument("--speed-steps", type=int, default=12)
    ap.add_argument("--ablation-steps", type=int, default=7)
    ap.add_argument("--warmup-steps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--ablations", default="all", help="comma-separated names from ABLATIONS[workload], or all")
    ap.add_argument("--smoke", action="store_true", help="a 2-layer model on any device: checks the harness only")
    args = ap.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])

    import torch
    import peft
    import transformers

    from baseline_hf import run_baseline
    from ours import run_ours

    w = WORKLOADS[args.workload]
    if args.smoke:
        w = smoke(w)
    phases = args.phases.split(",")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    short = next((k for k in ("h100", "h200", "a100") if k in device.lower()), device.split()[-1].lower())
    date = _dt.date.today().isoformat()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{w.id}-{short}-{date}" + ("-smoke" if args.smoke else "")
    path = out / f"{stem}.json"
    doc: dict = {"workload": w.id, "model": w.model, "method": w.method, "device": device, "n_gpus": 1,
                 "command": command, "date": date,
                 "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                              "peft": peft.__version__, "liger_kernel": _version("liger-kernel")},
                 "counting": "benchmark.md; steady state after the first --warmup-steps steps; MFU from real "
                             "tokens/s with T = token-weighted mean document length",
                 "phases": {}, "errors": {}}

    def save() -> None:
        path.write_text(json.dumps(doc, indent=1))

    def log(s: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {s}", flush=True)

    t0 = time.perf_counter()
    examples = synthetic_examples(args.examples, args.seed, vocab=w.config["vocab_size"], max_length=w.max_length)
    model_dir = build_model_dir(w, Path(args.model_dir) / (w.id + ("-smoke" if args.smoke else "")), seed=args.seed)
    log(f"model ready in {time.perf_counter() - t0:.0f}s at {model_dir}")
    work = Path(args.work_dir)

    from finetune_trainer.data import pack_examples

    # ---- loss: identical data per step, 50 steps; the baseline's speed comes from here too ----------------------
    if "loss" in phases:
        import torch as _t

        b = w.baseline_batch
        groups = [examples[k * b:(k + 1) * b] for k in range(LOSS_STEPS)]
        rows = [pack_examples(g, sum(len(e["input_ids"]) for e in g), seed=0)[0] for g in groups]
        # the recipe takes row perm[s] at step s (recipe.micro_batches: seed * 1000003 + epoch); give the
        # baseline the same examples in the same steps; the recorded per-step token counts are checked below
        perm = _t.randperm(LOSS_STEPS, generator=_t.Generator().manual_seed(args.seed * 1000003)).tolist()
        ordered = [e for s in range(LOSS_STEPS) for e in groups[perm[s]]]
        fpt = flops_per_token(w, doc_len(examples[:LOSS_STEPS * b]))
        try:
            log("baseline: 50 steps")
            base = run_baseline(w, model_dir, ordered, steps=LOSS_STEPS, lr=LR, warmup_steps=5, seed=args.seed,
                                out_dir=work / "baseline", log=log)
            doc["baseline"] = steady(base, args.warmup_steps, fpt)
            doc["phases"]["baseline_steps"] = base["steps"]
            log(f"baseline: {doc['baseline']}")
            save()
            log("ours on the same 50 steps (each step's examples packed into one row)")
            ours = run_ours(w, model_dir, rows, work / "ours-loss", steps=LOSS_STEPS, lr=LR, warmup_ratio=0.1,
                            seed=args.seed, global_batch=1, micro=1, checkpointing=False)
            same = [r["trainable_tokens"] for r in base["steps"]] == [r["trainable_tokens"] for r in ours["steps"]]
            doc["phases"]["ours_same_batches"] = {**steady(ours, args.warmup_steps, fpt), "same_data_per_step": same,
                                                  "steps": ours["steps"]}
            doc["loss_agreement"] = loss_agreement(base["steps"], ours["steps"]) | {"same_data_per_step": same}
            doc["loss_rel_diff_50_steps"] = doc["loss_agreement"]["mean_rel_diff_of_means"]
            log(f"loss agreement: {doc['loss_agreement']}")
        except Exception as e:  # noqa: BLE001 - record and go on with the other phases
            doc["errors"]["loss"] = _err(e)
            log(f"loss phase failed: {doc['errors']['loss']}")
            _free()
        save()

    packed = pack_examples(examples, w.max_length, seed=args.seed)
    fpt = flops_per_token(w, doc_len(examples))
    doc["data"] = {"examples": len(examples), "rows": len(packed), "doc_len_token_weighted": round(doc_len(examples)),
                   "mean_len": round(sum(len(e["input_ids"]) for e in examples) / len(examples)),
                   "row_fill": round(sum(len(r["input_ids"]) for r in packed) / (len(packed) * w.max_length), 4),
                   "flops_per_token": fpt}

    def ours_run(name: str, steps: int, *, micro: int, accumulation: int, checkpointing: bool, attn: str = "auto",
                 liger_on: bool = True, fast_lora: bool = True, profile: bool = False,
                 strategy: str = "auto", packing: bool = True, padding_free: bool = True,
                 checkpoint_layers: int | None = None) -> dict | None:
        try:
            log(f"ours[{name}]: micro {micro} x {w.max_length} x acc {accumulation}, ckpt {checkpointing}, "
                f"attn {attn}, liger {liger_on}, fast LoRA {fast_lora}, strategy {strategy}, packing {packing}, "
                f"padding-free {padding_free}")
            r = run_ours(w, model_dir, packed if packing else examples, work / f"ours-{name}", steps=steps, lr=LR, warmup_ratio=0.1,
                         seed=args.seed, global_batch=micro * accumulation, micro=micro, checkpointing=checkpointing,
                         attn=attn, liger_on=liger_on, fast_lora=fast_lora, strategy=strategy,
                         packing=packing, padding_free=padding_free, checkpoint_layers=checkpoint_layers,
                         profile_to=out / f"{stem}-profile.txt" if profile else None)
            s = steady(r, min(args.warmup_steps, steps - 1), fpt) | {
                "micro_rows": micro, "accumulation": accumulation, "checkpointing": checkpointing, "attn": attn,
                "liger": liger_on, "fast_lora": fast_lora, "strategy": strategy, "packing": packing,
                "padding_free": padding_free, "checkpoint_layers": checkpoint_layers,
                "losses": [round(x["loss"], 4) for x in r["steps"]]}
            log(f"ours[{name}]: {s}")
            return s
        except Exception as e:  # noqa: BLE001
            doc["errors"][name] = _err(e)
            log(f"ours[{name}] failed: {doc['errors'][name]}")
            _free()
            return None

    # ---- speed: ours as shipped ---------------------------------------------------------------------------------
    if "speed" in phases:
        s = ours_run("default", args.speed_steps, micro=w.ours_micro, accumulation=w.ours_accumulation,
                     checkpointing=w.ours_checkpointing)
        if s:
            doc["ours"] = s
            if "baseline" in doc:
                doc["speedup"] = round(s["real_tok_s"] / doc["baseline"]["real_tok_s"], 2)
                doc["speedup_trainable"] = round(s["trainable_tok_s"] / doc["baseline"]["trainable_tok_s"], 2)
                doc["memory_ratio"] = round(s["peak_gib"] / max(doc["baseline"]["peak_gib"], 1e-9), 2)
        save()

    if "profile" in phases:
        ours_run("profile", 6, micro=w.ours_micro, accumulation=w.ours_accumulation,
                 checkpointing=w.ours_checkpointing, profile=True)
        doc["profile"] = f"{stem}-profile.txt"
        save()
    # ---- ablation: one piece off at a time ----------------------------------------------------------------------
    if "ablation" in phases:
        n = args.ablation_steps
        table = doc.setdefault("ablation", {})
        plan = [(k, v) for k, v in ABLATIONS[w.id].items() if args.ablations == "all" or k in args.ablations.split(",")]
        for name, kw in plan:
            table[name] = ours_run(name, n, **kw) or {"error": doc["errors"].get(name)}
            save()

    doc["wall_seconds"] = round(time.perf_counter() - t0)
    save()
    log(f"wrote {path}")
    return 0


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e)[:400]} | {''.join(traceback.format_tb(e.__traceback__)[-2:])[-600:]}"


def _free() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(main())
