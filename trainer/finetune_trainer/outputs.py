"""Writing the result: adapter (or full weights), tokenizer, merged model, SNR scan, curves plot, manifest last.

What the end of a run writes (and nothing more by default): the output the spec asks for — a PEFT adapter, or
the full weights in the model's dtype (bf16 for a bf16 model, not the fp32 master copy training keeps) as
Hugging Face safetensors shards with their index, loadable by `from_pretrained` — plus the tokenizer, the
merged model when `mergeAdapter` is set, and manifest.json. No resumable checkpoint of a finished run is
written (`spec.output.saveFinalCheckpoint` opts in): it would need several times the output's space.

Full weights are streamed (`write_shards`): the strategy hands over one gathered parameter at a time and rank 0
fills shards of at most `MAX_SHARD_BYTES`, so no rank ever holds the whole model (an 8B model's bf16 weights are
16 GB; a 70B's 140 GB). Everything goes into a hidden temp folder first and is moved into place file by file
with `os.replace`, the free space is checked before anything is written, and manifest.json (with every
file's sha256) is written last, so its presence means the output is complete.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional

from finetune_api.fingerprint import fingerprint, shaping_fields
from finetune_api.trainer_config import TrainerConfig

from .distributed import Dist, barrier
from .manifest import MANIFEST, sha256_file, write_manifest

SPECTRUM_FILE = "spectrum_snr.json"
MAX_SHARD_BYTES = 5 * 1024 ** 3
FINAL_TMP = ".final.tmp"
MERGED_TMP = ".merged.tmp"


def _move_into(tmp: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            target = dest / f.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(f, target)
    shutil.rmtree(tmp, ignore_errors=True)


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def write_shards(weights: Iterator[tuple[str, Optional[Any]]], folder: Path, main: bool,
                 max_shard_bytes: int = MAX_SHARD_BYTES) -> list[str]:
    """Stream (name, tensor) pairs into Hugging Face safetensors shards + index on rank 0 (`main`).

    Every rank must consume `weights` (its items are collectives); only rank 0's tensors are not None. One
    shard is `model.safetensors`; more are `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`.

    Returns:
        The file names written (rank 0), [] elsewhere.
    """
    from safetensors.torch import save_file

    shard: dict = {}
    size = 0
    parts: list[tuple[str, list[str], int]] = []

    def flush():
        nonlocal shard, size
        if shard:
            name = f".part-{len(parts):05d}.safetensors"
            save_file(shard, folder / name, metadata={"format": "pt"})
            parts.append((name, list(shard), size))
        shard, size = {}, 0

    for name, t in weights:
        if not main:
            continue
        nbytes = t.numel() * t.element_size()
        if shard and size + nbytes > max_shard_bytes:
            flush()
        shard[name] = t
        size += nbytes
    if not main:
        return []
    flush()
    n = len(parts)
    if n == 1:
        os.replace(folder / parts[0][0], folder / "model.safetensors")
        return ["model.safetensors"]
    weight_map, files, total = {}, [], 0
    for i, (tmp_name, names, nbytes) in enumerate(parts, start=1):
        final = f"model-{i:05d}-of-{n:05d}.safetensors"
        os.replace(folder / tmp_name, folder / final)
        weight_map |= {k: final for k in names}
        files.append(final)
        total += nbytes
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return files + ["model.safetensors.index.json"]


def merged_model(cfg: TrainerConfig, model, out: Path):
    """The adapter merged into the base (peft `merge_and_unload`).

    In place when this process holds the whole model in its training precision (one process or DDP, LoRA);
    otherwise — sharded strategies, or QLoRA whose base is 4-bit — the base is reloaded on the CPU in its
    stored dtype and the adapter just saved in `out` is merged into it, so the merge is exact and needs host
    memory for one copy of the model (local_run.check_merge_fits refuses runs whose host cannot hold it).
    """
    if cfg.strategy in ("single", "ddp") and cfg.job.spec.method.type == "lora":
        return model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .modeling import _source, resolve_dtype

    src, kw = _source(cfg)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=resolve_dtype(cfg), device_map={"": "cpu"}, **kw)
    return PeftModel.from_pretrained(base, out).merge_and_unload()


def save_outputs(cfg: TrainerConfig, strat, model, tokenizer, summary: dict[str, Any], d: Dist) -> dict[str, Any]:
    """Write the run's output into cfg.output_dir and return the summary with paths and checksums (a collective).

    Raises:
        DiskFull: the output volume cannot hold the output (checked before writing).
    """
    from .checkpoint import ensure_space
    from .faults import maybe_fail
    from .modeling import resolve_dtype
    from .serving import handoff

    out = Path(cfg.output_dir)
    spec = cfg.job.spec
    need = cfg.plan.disk.output_bytes if cfg.plan.disk else 0
    ensure_space(out, need, "the final output", d)
    tmp = out / FINAL_TMP
    if d.main:
        _fresh(tmp)
    barrier(d)
    maybe_fail("output", d.rank)
    if spec.method.is_adapter:
        adapter = strat.gather_trainable()
        if d.main:
            model.save_pretrained(tmp, state_dict=adapter, safe_serialization=True)
    else:
        dtype = resolve_dtype(cfg)
        if d.main:
            config = copy.deepcopy(model.config)
            config.dtype = dtype
            config.save_pretrained(tmp)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(tmp)
        write_shards(strat.full_weights(dtype), tmp, d.main)
    if d.main:
        tokenizer.save_pretrained(tmp)
        _move_into(tmp, out)
        if spec.output.merge_adapter:
            tmp = _fresh(out / MERGED_TMP)
            merged = merged_model(cfg, model, out)
            merged.save_pretrained(tmp, safe_serialization=True, max_shard_size="2GB")
            tokenizer.save_pretrained(tmp)
            _move_into(tmp, out / "merged")
        plot = plot_curves(out)
        if plot:
            summary["plot"] = plot.name
        summary["output_path"] = str(out)
        write_manifest(out, spec=spec.to_wire(), metrics=finite({k: v for k, v in summary.items()
                                                                  if k not in ("output_path", "plot")}),
                       extra={"name": cfg.job.metadata.name, "method": spec.method.type,
                              "objective": spec.objective.type, "launch": cfg.plan.to_wire(),
                              "fingerprint": fingerprint(spec), "shaping_fields": shaping_fields(spec),
                              "serving": handoff(cfg, summary)})
        summary["manifest_sha256"] = sha256_file(out / MANIFEST)
    barrier(d)
    return summary


def finite(doc):
    """`doc` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {k: finite(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [finite(v) for v in doc]
    return doc


def plot_curves(out: Path) -> Path | None:
    """training_curves.png: loss and eval loss by step, and tokens/s, from metrics.jsonl."""
    f = out / "metrics.jsonl"
    if not f.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(r) for r in f.read_text(encoding="utf-8").splitlines() if r]
    train = [r for r in rows if "loss" in r]
    ev = [r for r in rows if "eval_loss" in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss")
    if ev:
        ax1.plot([r["step"] for r in ev], [r["eval_loss"] for r in ev], "o-", label="eval loss")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.plot([r["step"] for r in train], [r["tokens_per_s"] for r in train])
    ax2.set_xlabel("step")
    ax2.set_ylabel("tokens/s")
    fig.tight_layout()
    target = out / "training_curves.png"
    tmp = out / ".training_curves.png.tmp"
    fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    os.replace(tmp, target)
    return target
