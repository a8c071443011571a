"""`finetune run` and `finetune plan`: a fine-tune on this machine, and the launch plan for any machine.

`run` plans the launch (refusing what cannot run before anything loads), prints the plan, then starts the
trainer's launcher exactly as a pod does. `plan` prints what `finetune_plan.plan_launch` decides for this
machine's GPU or any other (`--gpu-memory 141GiB --gpus 2`), with the memory and disk it needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from finetune_api import load_job
from finetune_api.contract import ExitCode


def cmd_run(args) -> int:
    """Train locally (CPU or local GPUs) through the trainer's launcher, as a pod would."""
    from finetune_trainer.launcher import launch
    from finetune_trainer.local_run import describe, plan_local, read_summary

    job = load_job(args.spec)
    if job.spec.suspend:
        print(f"error: {args.spec}: spec.suspend is true, so there is nothing to run; set it to false to train "
              "(or resume from the newest checkpoint)", file=sys.stderr)
        return ExitCode.INPUT_ERROR
    cfg = plan_local(job, Path(args.spec))
    print(describe(cfg), flush=True)
    code, failure = launch(cfg, node=0)
    if failure is not None:
        from finetune_api.loading import locate

        print(f"error: {locate(args.spec, failure.message)}", file=sys.stderr, flush=True)
        return int(code)
    if code == ExitCode.PREEMPTED:
        print("stopped: a checkpoint was saved; run the same command again to resume from it", file=sys.stderr)
        return int(code)
    if code != 0:
        return int(code)
    summary = read_summary(cfg.output_dir)
    m = summary["metrics"]
    out = Path(cfg.output_dir)
    loss = m.get("final_loss")
    print(f"done: {m['steps']} steps" + (f", final loss {loss:.4f}" if loss is not None else "")
          + (f", eval loss {m['final_eval_loss']:.4f}" if m.get("final_eval_loss") is not None else "")
          + (f" (before training {m['initial_eval_loss']:.4f})" if m.get("initial_eval_loss") is not None else "")
          + (f", eval exact match {m['eval_exact_match']:.1%}" if m.get("eval_exact_match") is not None else ""))
    print(f"output:      {out}  (manifest.json lists every file with its sha256)")
    print(f"tensorboard: tensorboard --logdir {out / 'runs'}")
    if (out / "training_curves.png").exists():
        print(f"curves:      {out / 'training_curves.png'}")
    from finetune_trainer.serving import handoff

    serving = handoff(cfg, m)
    print(f"serve:       {serving['vllm']['command']}")
    if serving.get("vllm_merged"):
        print(f"             {serving['vllm_merged']['command']}  (the merged model)")
    ready = serving["ready_to_serve"]
    if ready["reason"] != "NoGate":
        print(f"ready to serve: {'yes' if ready['status'] == 'True' else 'no'} ({ready['message']})")
    return 0


def cmd_plan(args) -> int:
    """Print the launch plan (strategy, micro-batch, checkpointing, GPU and host memory, disk) for a machine."""
    if args.model is not None:
        from .node_plan import cmd_node_plan

        if args.spec:
            print("error: give a FineTuneJob file or --model, not both", file=sys.stderr)
            return ExitCode.INPUT_ERROR
        return cmd_node_plan(args)
    if args.spec is None:
        print("error: finetune plan needs a FineTuneJob file, or --model <hub id or folder> --node <preset>",
              file=sys.stderr)
        return ExitCode.INPUT_ERROR
    from finetune_plan import GiB, Machine, auto_candidates, describe, parse_bytes, plan_launch
    from finetune_trainer.local_run import check_merge_fits, model_shape, resolve_paths

    job = load_job(args.spec)
    node = None
    if args.node:
        from finetune_plan.node import node_for

        node = node_for(args.node)
        args.gpus = args.gpus or node.gpus
        args.gpu_memory = args.gpu_memory or f"{node.gpu_bytes}"
    spec = job.spec
    gpus = args.gpus
    if gpus is None:
        gpus = spec.distributed.gpus_per_node if spec.distributed.gpus_per_node not in ("auto", 0) else 1
    if args.gpu_memory is None:
        from finetune_trainer.liger import installed
        from finetune_trainer.local_run import gpu_memory_bytes

        gpu_bytes, fused = gpu_memory_bytes(), installed()
        if gpu_bytes is None:
            print("error: no GPU visible: pass --gpu-memory (e.g. 80GiB, 141GiB) to plan for a machine",
                  file=sys.stderr)
            return ExitCode.INPUT_ERROR
    else:
        gpu_bytes, fused = parse_bytes(args.gpu_memory), True  # another machine: the trainer image's kernels
    from finetune_plan.catalog import shape_for_hub_id

    cfg = resolve_paths(job, Path(args.spec))
    shape = shape_for_hub_id(spec.model.hub_id) or model_shape(cfg)  # well-known hub ids: no download
    if shape is None:
        print(f"error: spec.model: cannot read the model's config.json ({cfg.model_path or spec.model.hub_id}); "
              "the plan needs its shape", file=sys.stderr)
        return ExitCode.INPUT_ERROR
    machine = Machine(device="cuda", nodes=spec.distributed.nodes, nproc_per_node=gpus, gpu_bytes=gpu_bytes,
                      fused_kernels=fused)
    plan = plan_launch(job, machine, shape)
    print(f"plan for {plan.world_size} GPU(s) x {gpu_bytes / GiB:.0f} GiB: {spec.method.type} + "
          f"{spec.objective.type}, maxLength {spec.dataset.max_length}")
    lines = describe(plan)[1:]
    if auto_candidates(job, machine):
        lines[0] += " (auto: DDP if it fits, else FSDP2 full shard)"
    for line in lines:
        print("  " + line)
    if plan.strategy.startswith("deepspeed"):
        from finetune_trainer.deepspeed_config import config_for

        ds = config_for(cfg.model_copy(update={"plan": plan}), plan.micro_batch, plan.gradient_accumulation,
                        plan.world_size)
        print("  deepspeed config: " + json.dumps(ds))
    check_merge_fits(cfg.model_copy(update={"plan": plan}))
    return _check_host(job, plan, shape, gpu_bytes, args, node)


def _check_host(job, plan, shape, gpu_bytes: int, args, node) -> int:
    """Print the host memory per node and the load on each GPU; refuse what the node cannot hold."""
    from finetune_plan.host import describe_host, host_estimate
    from finetune_plan.launch_plan import Machine, workload
    from finetune_plan.memory import GiB, parse_bytes

    from .node_plan import this_machine_host_bytes

    # this machine's host when planning for this machine; another machine's (--gpu-memory) only when given
    host_bytes = (parse_bytes(args.host_memory) if args.host_memory else node.host_bytes if node
                  else None if args.gpu_memory else this_machine_host_bytes())
    machine = Machine(device="cuda", nodes=plan.nodes, nproc_per_node=plan.nproc_per_node, gpu_bytes=gpu_bytes)
    h = host_estimate(shape, workload(job, plan.strategy or "ddp", machine), plan.nproc_per_node,
                      merge=job.spec.output.merge_adapter, dora=job.spec.lora.use_dora)
    print("  " + describe_host(h, host_bytes) + ("" if host_bytes else " (--host-memory to check it against a node)"))
    problems = []
    if h.gpu_load + GiB > gpu_bytes and not h.sharded_load:
        problems.append(f"loading puts the whole model ({h.gpu_load / GiB:.0f} GiB in its training dtype) on each GPU "
                        f"before {plan.strategy} shards it, and a GPU holds {gpu_bytes / GiB:.0f} GiB: use method "
                        "qlora or lora (a bf16 base), or GPUs with more memory")
    if host_bytes is not None and h.peak > host_bytes:
        fix = ("spec.distributed.cpuOffload moves the weights, gradients and optimizer state to the host: turn it "
               "off and shard over more GPUs" if job.spec.distributed.cpu_offload
               else "use fewer processes per node, or method lora/qlora")
        problems.append(f"the node's host memory: this plan needs ~{h.peak / GiB:.0f} GiB per node at its peak "
                        f"({h.dominant}) and the node has {host_bytes / GiB:.0f} GiB (--host-memory); {fix}")
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return ExitCode.INPUT_ERROR if problems else 0
