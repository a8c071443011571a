"""finetune_cli: the user's `finetune` command, a room above the API, the operator and the trainer.

Each subcommand imports only what it needs, when it runs: `validate` and `explain` the API (well under a
second, no torch), `render` the operator's pure renderers, `run` and `plan` the planner and the trainer. So
the operator image (no torch) and the trainer image (no Kubernetes client) each carry the commands they can
answer, and neither package imports the other (like Kueue's `cmd/kueuectl` apart from its controllers).
"""
