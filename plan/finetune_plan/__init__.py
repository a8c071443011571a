"""finetune_plan: the launch planner — processes, strategy, batch shape, memory and disk, as pure arithmetic.

A room of its own because three others need it and must not import each other: the operator (which carries no
deep-learning libraries) plans what it can before a pod exists, the `finetune` CLI prints plans for machines
you do not have, and the trainer's launcher completes and obeys them. Only the standard library and
`finetune_api` are imported here.
"""

from .launch_plan import Machine, auto_candidates, describe, plan_batches, plan_launch, resolve_strategy
from .memory import GiB, DoesNotFit, ModelShape, parse_bytes

__all__ = ["Machine", "auto_candidates", "describe", "plan_batches", "plan_launch", "resolve_strategy", "GiB",
           "DoesNotFit", "ModelShape", "parse_bytes"]
