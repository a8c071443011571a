"""`finetune`: the user's command line — validate, explain, render, plan, run.

`validate` and `explain` import no torch (they answer in well under a second); `run` plans the launch
(refusing what cannot run before anything loads), then starts torchrun exactly as a pod does; `plan` prints
the memory planner's choice for this machine's GPU or any other (`--gpu-memory 141GiB --gpus 2`).
Exit status: 0 ok, 1 unexpected failure, 2 a problem with the user's input (spec, data, model, machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from finetune_api import SpecError, load_job


def _cmd_validate(args) -> int:
    job = load_job(args.spec)
    s = job.spec
    print(f"{args.spec}: valid FineTuneJob '{job.metadata.name}' ({s.method.type} + {s.objective.type}, "
          f"{s.dataset.format} data)")
    return 0


def _cmd_explain(args) -> int:
    from finetune_api.explain import UnknownField, explain

    try:
        print(explain(args.field or ""))
    except UnknownField as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2
    return 0


def _cmd_render(args) -> int:
    import yaml

    from finetune_operator.render import render_children

    job = load_job(args.spec)
    if not job.metadata.namespace:
        job.metadata.namespace = args.namespace
    docs = render_children(job, uid=args.uid, image=args.image)
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def _cmd_run(args) -> int:
    from .launch import describe, plan_local, read_summary, run_local

    job = load_job(args.spec)
    if job.spec.suspend:
        print(f"error: {args.spec}: spec.suspend is true, so there is nothing to run; set it to false to train "
              "(or resume from the newest checkpoint)", file=sys.stderr)
        return 2
    cfg = plan_local(job, Path(args.spec))
    print(describe(cfg), flush=True)
    status = run_local(cfg)
    if status != 0:
        return status
    summary = read_summary(cfg.output_dir)
    m = summary["metrics"]
    out = Path(cfg.output_dir)
    print(f"done: {m['steps']} steps, final loss {m['final_loss']:.4f}"
          + (f", eval loss {m['final_eval_loss']:.4f}" if m.get("final_eval_loss") is not None else "")
          + (f" (before training {m['initial_eval_loss']:.4f})" if m.get("initial_eval_loss") is not None else "")
          + (f", eval exact match {m['eval_exact_match']:.1%}" if m.get("eval_exact_match") is not None else ""))
    print(f"output:      {out}  (manifest.json lists every file with its sha256)")
    print(f"tensorboard: tensorboard --logdir {out / 'runs'}")
    if (out / "training_curves.png").exists():
        print(f"curves:      {out / 'training_curves.png'}")
    return 0


def _cmd_plan(args) -> int:
    from finetune_api.launch import resolve_strategy
    from finetune_api.trainer_config import TrainerConfig

    from .batching import memory_plan
    from .launch import _resolve, check_merge_fits
    from .planner import GiB, parse_bytes

    job = load_job(args.spec)
    spec = job.spec
    gpus = args.gpus
    if gpus is None:
        gpus = spec.distributed.gpus_per_node if spec.distributed.gpus_per_node not in ("auto", 0) else 1
    if args.gpu_memory is None:
        from .launch import visible_gpus

        if visible_gpus() == 0:
            print("error: no GPU visible: pass --gpu-memory (e.g. 80GiB, 141GiB) to plan for a machine", file=sys.stderr)
            return 2
        gpu_bytes = None
    else:
        gpu_bytes = parse_bytes(args.gpu_memory)
    base = Path(args.spec).resolve().parent
    world = gpus * spec.distributed.nodes
    cfg = TrainerConfig(job=job, model_path=_resolve(base, spec.model.path), output_dir=str(base / "plan-unused"),
                        nodes=spec.distributed.nodes, nproc_per_node=gpus, device="cuda",
                        strategy=resolve_strategy(spec.distributed.strategy, spec.method.type, world, "cuda"))
    n_rows = args.examples or spec.training.global_batch_size
    rp = memory_plan(cfg, world, n_rows, gpu_bytes=gpu_bytes)
    p = rp.plan
    e = p.estimate.as_gib()
    strategy = p.strategy if spec.distributed.strategy == "auto" and world > 1 else rp.strategy
    print(f"plan for {world} GPU(s) x {p.gpu_bytes / GiB:.0f} GiB: {spec.method.type} + {spec.objective.type}, "
          f"maxLength {spec.dataset.max_length}")
    print(f"  strategy:      {strategy}" + (" (auto: the least sharding that fits)" if spec.distributed.strategy == "auto"
                                             and world > 1 else ""))
    print(f"  micro-batch:   {rp.batch.micro} x accumulation {rp.batch.accumulation} x {world} = "
          f"{rp.batch.global_batch} per step")
    k = p.checkpoint_layers if rp.checkpointing else 0
    print(f"  checkpointing: {'off' if not k else 'on' if k == p.layers else f'{k} of {p.layers} blocks'}")
    print("  estimate per GPU (GiB): " + ", ".join(f"{k} {v:.1f}" for k, v in e.items()))
    if rp.strategy.startswith("deepspeed"):
        from .deepspeed_config import config_for

        ds = config_for(cfg.model_copy(update={"strategy": rp.strategy}), rp.batch.micro, rp.batch.accumulation,
                        world)
        print("  deepspeed config: " + json.dumps(ds))
    check_merge_fits(cfg)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `finetune` argument parser."""
    ap = argparse.ArgumentParser(prog="finetune", description="Fine-tune an LLM from one FineTuneJob YAML.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a FineTuneJob file; errors name the file, line and field")
    p.add_argument("spec")
    p.set_defaults(func=_cmd_validate)
    p = sub.add_parser("explain", help="describe a field of the spec, e.g. spec.method.lora")
    p.add_argument("field", nargs="?")
    p.set_defaults(func=_cmd_explain)
    p = sub.add_parser("render", help="print the Kubernetes objects the operator would create")
    p.add_argument("spec")
    p.add_argument("--namespace", default="default")
    p.add_argument("--uid", default="00000000-0000-0000-0000-000000000000", help="owner uid to reference")
    p.add_argument("--image", default=None, help="trainer image (default: the operator's default)")
    p.set_defaults(func=_cmd_render)
    p = sub.add_parser("plan", help="print the memory plan (strategy, micro-batch, checkpointing) and its estimate")
    p.add_argument("spec")
    p.add_argument("--gpu-memory", default=None, help="memory per GPU to plan for, e.g. 80GiB or 141GiB "
                   "(default: this machine's first GPU)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs per node to plan for (default: the spec's, or 1)")
    p.add_argument("--examples", type=int, default=None,
                   help="training examples (default: assume at least globalBatchSize)")
    p.set_defaults(func=_cmd_plan)
    p = sub.add_parser("run", help="train locally (CPU or local GPUs) through torchrun, as a pod would")
    p.add_argument("spec")
    p.set_defaults(func=_cmd_run)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `finetune` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        from .errors import TrainerInputError

        if isinstance(e, TrainerInputError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
