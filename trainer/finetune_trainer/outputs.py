"""Writing the result: adapter (or full weights), tokenizer, merged model, SNR scan, curves plot, manifest last.

Each artefact is written into a hidden temp directory and moved into place file by file with `os.replace`,
so a reader never sees half a safetensors file; manifest.json (with every file's sha256) is written last,
so its presence means the output is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from finetune_api.trainer_config import TrainerConfig

from .manifest import MANIFEST, sha256_file, write_manifest


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


SPECTRUM_FILE = "spectrum_snr.json"


def merged_model(cfg: TrainerConfig, model, out: Path):
    """The adapter merged into the base (peft `merge_and_unload`).

    In place when this process holds the whole model in its training precision (one process or DDP, LoRA);
    otherwise — sharded strategies, or QLoRA whose base is 4-bit — the base is reloaded on the CPU in its
    stored dtype and the adapter just saved in `out` is merged into it, so the merge is exact and needs host
    memory for one copy of the model (launch.py refuses runs whose host cannot hold it).
    """
    if cfg.strategy in ("single", "ddp") and cfg.job.spec.method.type == "lora":
        return model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from .modeling import _source, resolve_dtype

    src, kw = _source(cfg)
    base = AutoModelForCausalLM.from_pretrained(src, dtype=resolve_dtype(cfg), device_map={"": "cpu"}, **kw)
    return PeftModel.from_pretrained(base, out).merge_and_unload()


def save_outputs(cfg: TrainerConfig, model, tokenizer, summary: dict[str, Any], state_dict=None) -> dict[str, Any]:
    """Write the run's output into cfg.output_dir and return the summary with paths and checksums.

    Args:
        state_dict: the full state dict gathered from a sharded model (parallel.py); None: read `model`.
    """
    out = Path(cfg.output_dir)
    spec = cfg.job.spec
    tmp = _fresh(out / ".final.tmp")
    kw = {"state_dict": state_dict} if state_dict is not None else {}
    model.save_pretrained(tmp, safe_serialization=True, **kw)
    tokenizer.save_pretrained(tmp)
    _move_into(tmp, out)
    if spec.output.merge_adapter:
        tmp = _fresh(out / ".merged.tmp")
        merged = merged_model(cfg, model, out)
        merged.save_pretrained(tmp, safe_serialization=True, max_shard_size="2GB")
        tokenizer.save_pretrained(tmp)
        _move_into(tmp, out / "merged")
    plot = plot_curves(out)
    if plot:
        summary["plot"] = plot.name
    summary["output_path"] = str(out)
    write_manifest(out, spec=cfg.job.spec.to_wire(),
                   metrics={k: v for k, v in summary.items() if k not in ("output_path", "plot")},
                   extra={"name": cfg.job.metadata.name, "method": spec.method.type,
                          "objective": spec.objective.type, "launch": cfg.plan.to_wire()})
    summary["manifest_sha256"] = sha256_file(out / MANIFEST)
    return summary


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
