"""DeepSpeed ZeRO-2/3 behind the Strategy interface (strategy.py); GPU only.

The engine is built from the generated config (deepspeed_config.py) and owns the optimizer (AdamW, fused CPU
Adam when offloaded) and the fp32 master weights; the LR schedule stays transformers'. Checkpoints hold
DeepSpeed's own sharded files (`engine.save_checkpoint`, every rank its share) inside the common atomic,
checksummed step folder (checkpoint.write), so a DeepSpeed checkpoint resumes a DeepSpeed run of the same world
size. Outputs stream one gathered parameter at a time (`full_weights`), never the whole model on rank 0.

Private DeepSpeed API used, each with a version guard (`check_version`) and a GPU test
(tests/gpu/methods_gpu.py runs ZeRO-2 and ZeRO-3): `engine.basic_optimizer` (the torch optimizer ZeRO wraps,
which transformers' schedulers need), `deepspeed.zero.GatheredParameters` (public) for streaming.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Optional

from .errors import EnvironmentProblem

TAG = "deepspeed"
SCHEDULER = "scheduler.pt"
TESTED = ((0, 16), (0, 20))  # DeepSpeed versions [from, to) whose private members below were checked


def _import_deepspeed():
    try:
        import deepspeed
    except ImportError:
        raise EnvironmentProblem("spec.distributed.strategy deepspeed-*: deepspeed is not installed in this image "
                                 "(pip install deepspeed; see Dockerfile.trainer)") from None
    return deepspeed


def check_version(version: str) -> None:
    """Refuse a DeepSpeed release outside the range whose private members this module was tested with.

    Raises:
        EnvironmentProblem: names the version and the tested range.
    """
    parts = tuple(int(x) for x in version.split("+")[0].split(".")[:2] if x.isdigit())
    if not (TESTED[0] <= parts < TESTED[1]):
        raise EnvironmentProblem(
            f"deepspeed {version} is outside the versions finetune-operator was tested with "
            f"({'.'.join(map(str, TESTED[0]))} to before {'.'.join(map(str, TESTED[1]))}); install one of those "
            "or use spec.distributed.strategy fsdp")


class DeepSpeedZero:
    """ZeRO stage 2 or 3 via `deepspeed.initialize`."""

    sharded = True

    def __init__(self, model, cfg, d):
        self.deepspeed = _import_deepspeed()
        check_version(self.deepspeed.__version__)
        from .deepspeed_config import config_for

        self.model = model
        self.forward_model = model
        self.d = d
        self.stage3 = cfg.strategy == "deepspeed-zero3"
        self.ds_config = config_for(cfg, cfg.plan.micro_batch, cfg.plan.gradient_accumulation, d.world)
        self.engine = None

    def setup_optimizer(self, make_optimizer, make_scheduler) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.engine, self.optimizer, _, _ = self.deepspeed.initialize(model=self.model, model_parameters=params,
                                                                      config=self.ds_config)
        self.forward_model = self.engine
        # torch's schedulers accept only a torch Optimizer; ZeRO's wrapper is not one, but the optimizer it wraps
        # (FusedAdam / DeepSpeedCPUAdam) is, and its param_groups are the ones ZeRO steps
        inner = getattr(self.engine, "basic_optimizer", None)
        if inner is None:
            raise EnvironmentProblem(f"deepspeed {self.deepspeed.__version__}: the engine has no basic_optimizer")
        self.scheduler = make_scheduler(inner)

    def accumulating(self, last: bool):
        return contextlib.nullcontext()  # the engine knows the accumulation boundary from its config

    def backward(self, loss, last: bool) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # our loss is already normalised for the whole step
        if not last:
            self.engine.step()  # not a boundary: DeepSpeed only advances its micro-step counter

    def step(self, max_norm: float, guard) -> float:
        """The engine clips and steps in one call, so `guard` sees the norm just after the update: a non-finite
        one stops the run before anything is written (the recipe checks the loss before this)."""
        self.engine.step()  # boundary: clip (config's gradient_clipping), optimizer step, zero grads
        self.scheduler.step()
        norm = self.engine.get_global_grad_norm()
        norm = float(norm) if norm is not None else float("nan")
        guard(norm)
        return norm

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def write_checkpoint(self, folder: Path, rank: int) -> None:
        import torch

        self.engine.save_checkpoint(str(folder), tag=TAG)
        if rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict()}, folder / SCHEDULER)

    def read_checkpoint(self, folder: Path, rank: int) -> None:
        import torch

        from .checkpoint import CheckpointMismatch

        if not (folder / TAG).is_dir():
            raise CheckpointMismatch(f"{folder}: not written by a DeepSpeed run; resume with the strategy that "
                                     "wrote it, or delete the checkpoints to start over")
        self.engine.load_checkpoint(str(folder), tag=TAG)
        self.scheduler.load_state_dict(torch.load(folder / SCHEDULER, weights_only=False)["scheduler"])

    def _gathered(self, params: list):
        if not self.stage3:
            return contextlib.nullcontext()
        return self.deepspeed.zero.GatheredParameters(params, modifier_rank=None)

    def gather_trainable(self) -> dict:
        out = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                with self._gathered([p]):
                    if self.d.rank == 0:
                        out[name] = p.detach().to("cpu").contiguous()
        return out

    def full_weights(self, dtype) -> Iterator[tuple[str, Optional[Any]]]:
        from .strategy import tied_names

        skip = tied_names(self.model)
        params = dict(self.model.named_parameters())
        for name, t in self.model.state_dict().items():
            if name in skip:
                continue
            p = params.get(name)
            with self._gathered([p] if p is not None else []):
                src = p if p is not None else t
                yield name, (src.detach().to("cpu", dtype if src.is_floating_point() else src.dtype).contiguous()
                             if self.d.rank == 0 else None)
