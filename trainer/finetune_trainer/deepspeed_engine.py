"""DeepSpeed ZeRO-2/3 behind the same verbs as parallel.py's strategies (GPU only).

The engine is built from the generated config (deepspeed_config.py) and owns the optimizer (AdamW, fused CPU
Adam when offloaded) and the fp32 master weights; the LR schedule stays transformers'. Checkpoints use
DeepSpeed's own sharded format (`engine.save_checkpoint`) inside our atomic step directory: with ZeRO the
optimizer state exists only in shards, and gathering it to one rank would defeat the point of ZeRO-3 +
offload. So a DeepSpeed checkpoint resumes a DeepSpeed run of the same world size; the *output* is a normal
safetensors model (ZeRO-3 gathers a 16-bit copy on save).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from .errors import EnvironmentProblem

TAG = "deepspeed"


def _import_deepspeed():
    try:
        import deepspeed
    except ImportError:
        raise EnvironmentProblem("spec.distributed.strategy deepspeed-*: deepspeed is not installed in this image "
                                 "(pip install deepspeed; see Dockerfile.trainer)") from None
    return deepspeed


class DeepSpeedZero:
    """ZeRO stage 2 or 3 via `deepspeed.initialize`."""

    sharded = True

    def __init__(self, model, cfg, d):
        self.deepspeed = _import_deepspeed()
        from .deepspeed_config import config_for

        self.model = model
        self.forward_model = model
        self.stage3 = cfg.strategy == "deepspeed-zero3"
        self.ds_config = config_for(cfg, cfg.plan.micro_batch, cfg.plan.gradient_accumulation, d.world)
        self.engine = None

    def setup_optimizer(self, make_optimizer, make_scheduler) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.engine, self.optimizer, _, _ = self.deepspeed.initialize(model=self.model, model_parameters=params,
                                                                      config=self.ds_config)
        self.forward_model = self.engine
        # torch's schedulers accept only a torch Optimizer; ZeRO's wrapper is not one, but the optimizer it wraps
        # (FusedAdam / DeepSpeedCPUAdam) is, and its param_groups are the ones ZeRO steps (DeepSpeed does the same
        # with a client scheduler: it hands it engine.basic_optimizer)
        self.scheduler = make_scheduler(getattr(self.engine, "basic_optimizer", None)
                                        or getattr(self.optimizer, "optimizer", self.optimizer))

    def accumulating(self, last: bool):
        return contextlib.nullcontext()  # the engine knows the accumulation boundary from its config

    def backward(self, loss, last: bool) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # our loss is already normalised for the whole step
        if not last:
            self.engine.step()  # not a boundary: DeepSpeed only advances its micro-step counter

    def step(self, max_norm: float) -> float:
        self.engine.step()  # boundary: clip (config's gradient_clipping), optimizer step, zero grads
        self.scheduler.step()
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def save(self, out, step: int, train_state: dict, keep_last: int, rank: int, barrier) -> None:
        """Atomic step directory holding DeepSpeed's shards, our scheduler, RNG and position (collective)."""
        import torch

        from . import checkpoint as ckpt

        root = ckpt.checkpoints_dir(out)
        final = root / f"{ckpt.PREFIX}{step:08d}"
        tmp = root / f".{final.name}.tmp"
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        self.engine.save_checkpoint(str(tmp), tag=TAG)
        torch.save(ckpt._rng_state(), tmp / f"rng-{rank}.pt")
        barrier()
        if rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict()}, tmp / "scheduler.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, "format": TAG, **train_state}, indent=1),
                                            encoding="utf-8")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in ckpt.list_checkpoints(out)[:-keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        barrier()

    def load(self, path: Path, rank: int) -> dict:
        import torch

        from . import checkpoint as ckpt

        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if state.get("format") != TAG:
            raise EnvironmentProblem(f"{path}: written by a non-DeepSpeed run; resume with the strategy that wrote it")
        self.engine.load_checkpoint(str(path), tag=TAG)
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False)["scheduler"])
        rng = path / f"rng-{rank}.pt"
        if rng.exists():
            ckpt._set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
        return state

    def full_state_dict(self) -> dict:
        """16-bit weights of the whole model on rank 0 (ZeRO-3 gathers them: a collective)."""
        if self.stage3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
