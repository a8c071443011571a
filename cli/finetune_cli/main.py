"""`finetune`: the argument parser and the dispatch to each subcommand's module.

Exit status: 0 ok, 2 a problem with the user's input (spec, data, model, machine), 143 stopped by a signal
after saving a checkpoint, anything else a failure whose reason was printed. No traceback reaches the user: every
`UserError` (finetune_api.contract) is one `error:` line, and anything else (a bug) one line too, with the traceback
behind FINETUNE_DEBUG=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from finetune_api.contract import ExitCode, UserError


def _lazy(module: str, func: str):
    """A handler that imports its module only when its subcommand runs."""
    def run(args) -> int:
        return getattr(importlib.import_module(f"finetune_cli.{module}"), func)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    """The `finetune` argument parser."""
    ap = argparse.ArgumentParser(prog="finetune", description="Fine-tune an LLM from one FineTuneJob YAML.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a FineTuneJob file and what it points at (output folder, model, "
                       "data) as `run` would; errors name the file, line and field")
    p.add_argument("spec")
    p.add_argument("--skip-model", action="store_true", help="do not load the tokenizer, the chat template or the "
                   "architecture, nor plan for this machine (config.json and the LoRA rank are still checked)")
    p.add_argument("--skip-data", action="store_true", help="do not read the data rows (the files must still exist)")
    p.add_argument("--cluster", action="store_true", help="check as the operator renders the pods (paths inside "
                   "volumes), not for a local run; automatic when the spec names a volume")
    p.set_defaults(func=_lazy("spec_commands", "cmd_validate"))
    p = sub.add_parser("explain", help="describe a field of the spec, e.g. spec.method.lora")
    p.add_argument("field", nargs="?")
    p.set_defaults(func=_lazy("spec_commands", "cmd_explain"))
    p = sub.add_parser("render", help="print the Kubernetes objects the operator would create")
    p.add_argument("spec")
    p.add_argument("--namespace", default="default")
    p.add_argument("--uid", default="00000000-0000-0000-0000-000000000000", help="owner uid to reference")
    p.add_argument("--image", default=None, help="trainer image (default: the operator's default)")
    p.add_argument("--serving", action="store_true",
                   help="print how the result will be served instead: a vLLM command and a KServe InferenceService")
    p.set_defaults(func=_lazy("render_command", "cmd_render"))
    p = sub.add_parser("plan", help="print the launch plan: strategy, micro-batch, checkpointing, GPU and host "
                       "memory, disk; or with --model and --node, what fits on a node")
    p.add_argument("spec", nargs="?", help="a FineTuneJob file (or give --model)")
    p.add_argument("--model", default=None, help="a hub id (e.g. meta-llama/Llama-3.1-70B) or a folder with "
                   "config.json: print every method x strategy on the node instead of one spec's plan")
    p.add_argument("--node", default=None, help="a node preset: 1xH100, 8xH100, 1xH200, 2xH200, 8xH200")
    p.add_argument("--gpu-memory", type=_memory, default=None, help="memory per GPU to plan for, e.g. 80GiB or 141GiB "
                   "(default: the node's, or this machine's first GPU)")
    p.add_argument("--gpus", type=_at_least(1), default=None, help="GPUs per node to plan for (default: the node's, the "
                   "spec's, or 1)")
    p.add_argument("--host-memory", type=_memory, default=None, help="host memory per node, e.g. 512GiB (default: the node "
                   "preset's, else this machine's)")
    p.add_argument("--max-length", type=_at_least(1), default=2048, help="with --model: tokens per example (default 2048)")
    p.add_argument("--global-batch", type=_at_least(1), default=16, help="with --model: examples per step (default 16)")
    p.set_defaults(func=_lazy("local_commands", "cmd_plan"))
    p = sub.add_parser("run", help="train locally (CPU or local GPUs), the way a pod does")
    p.add_argument("spec")
    p.set_defaults(func=_lazy("local_commands", "cmd_run"))
    _cluster_commands(sub)
    return ap


def _duration(text: str) -> float:
    """Seconds from `90`, `90s`, `15m` or `2h`."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 15m, 2h)") from None


def _at_least(low: int):
    """An argparse type: a whole number >= low (--gpus 0 divided by zero in the planner)."""
    def whole(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < low:
            raise argparse.ArgumentTypeError(f"{n} is below {low}")
        return n
    return whole


def _memory(text: str) -> str:
    """A size with its unit (`141GiB`, `80GB`, `512Gi`): a bare number is refused, not read as bytes."""
    import re

    if not re.fullmatch(r"\s*\d+(\.\d+)?\s*([KMGTP]i?B?|[kmgtp]i?b?)\s*", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size with a unit (e.g. 80GiB, 141GiB, 512Gi)")
    return text.replace(" ", "")


def _cluster_commands(sub) -> None:
    """submit/status/logs/cancel/resume/list: the current kube context, like kubectl (cluster_commands.py)."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("-n", "--namespace", default=None, help="namespace (default: the context's, else default)")
    where.add_argument("--context", default=None, help="kubeconfig context (default: the current one)")
    watching = argparse.ArgumentParser(add_help=False)
    watching.add_argument("-w", "--watch", action="store_true",
                          help="follow progress and conditions until the job ends; exit 0 Succeeded, 1 Failed, "
                               "143 Suspended")
    watching.add_argument("--timeout", type=_duration, default=None,
                          help="stop watching after this long (e.g. 30m; exit 124, the job goes on)")
    p = sub.add_parser("submit", parents=[where, watching], help="create the FineTuneJob in the current kube context")
    p.add_argument("spec")
    p.set_defaults(func=_lazy("cluster_commands", "cmd_submit"))
    p = sub.add_parser("status", parents=[where], help="phase, progress, conditions, result, pods and events of a job")
    p.add_argument("name")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text", help="json: the status object")
    p.set_defaults(func=_lazy("cluster_commands", "cmd_status"))
    p = sub.add_parser("logs", parents=[where], help="the trainer log of one node rank (pod) of a job")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true", help="stream until the pod ends (and its restarts)")
    p.add_argument("--rank", type=_at_least(0), default=0, help="node rank: the job's pod with this index (default 0, "
                   "the one that logs progress)")
    p.add_argument("--tail", type=_at_least(0), default=None, help="only the last N lines")
    p.add_argument("--wait", type=_duration, default=300.0,
                   help="with -f, how long to wait for a pod to start (default 300s)")
    p.set_defaults(func=_lazy("cluster_commands", "cmd_logs"))
    p = sub.add_parser("cancel", parents=[where],
                       help="suspend a job (its pods stop after a checkpoint), or --delete it and its children")
    p.add_argument("name")
    p.add_argument("--delete", action="store_true", help="delete the FineTuneJob (and, by ownership, its Job and pods)")
    p.set_defaults(func=_lazy("cluster_commands", "cmd_cancel"))
    p = sub.add_parser("resume", parents=[where, watching], help="resume a suspended job from its newest checkpoint")
    p.add_argument("name")
    p.set_defaults(func=_lazy("cluster_commands", "cmd_resume"))
    p = sub.add_parser("list", parents=[where], help="the FineTuneJobs of a namespace: phase, progress, loss, model, "
                       "method, GPUs")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.set_defaults(func=_lazy("cluster_commands", "cmd_list"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `finetune` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UserError as e:
        message = str(e)
        if getattr(args, "spec", None):
            from finetune_api.loading import locate

            message = locate(args.spec, message)
        print(f"error: {message}", file=sys.stderr)
        return ExitCode.INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a bug of ours: one line for the user, the traceback on request
        if os.environ.get("FINETUNE_DEBUG") == "1":
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: finetune {args.command} failed unexpectedly: {type(e).__name__}: {first} (a bug; "
              "FINETUNE_DEBUG=1 shows the traceback - please report it)", file=sys.stderr)
        return ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
