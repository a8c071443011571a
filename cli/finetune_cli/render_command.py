"""`finetune render`: the Kubernetes objects the operator would create, from its own pure renderers."""

from __future__ import annotations

from finetune_api import load_job


def cmd_render(args) -> int:
    """Print the children of a FineTuneJob as YAML documents."""
    import yaml

    from finetune_operator.render import render_children

    job = load_job(args.spec)
    if not job.metadata.namespace:
        job.metadata.namespace = args.namespace
    docs = render_children(job, uid=args.uid, image=args.image)
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0
