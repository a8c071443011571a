"""`finetune render`: the Kubernetes objects the operator would create, from its own pure renderers.

`--serving` prints instead how the job's result will be served (a vLLM command and a KServe InferenceService,
finetune_trainer.serving), from the same paths the trainer pods will write; `kubectl apply -f -` takes it once
the job has succeeded.
"""

from __future__ import annotations

from finetune_api import load_job


def cmd_render(args) -> int:
    """Print the children of a FineTuneJob as YAML documents (or, with --serving, how to serve its result)."""
    import yaml

    job = load_job(args.spec)
    if not job.metadata.namespace:
        job.metadata.namespace = args.namespace
    if args.serving:
        return _serving(job)
    from finetune_operator.render import render_children

    docs = render_children(job, uid=args.uid, image=args.image)
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def _serving(job) -> int:
    import yaml

    from finetune_operator.pod_config import build_trainer_config
    from finetune_trainer.serving import handoff

    h = handoff(build_trainer_config(job))
    gate = job.spec.serving.gate
    lines = [f"# Serving {job.metadata.name} once it has succeeded"
             + (f" and condition ReadyToServe is True (spec.serving.gate: {gate.to_wire()})" if gate else "") + ".",
             f"# vLLM, with the trainer pod's mounts: {h['vllm']['command']}"]
    if h.get("vllm_merged"):
        lines.append(f"# or the merged model:               {h['vllm_merged']['command']}")
    lines += [f"# note: {n}" for n in h["notes"]]
    print("\n".join(lines))
    if h["kserve"] is not None:
        print(yaml.safe_dump(h["kserve"], sort_keys=False), end="")
    return 0
