"""`finetune`: the argument parser and the dispatch to each subcommand's module.

Exit status: 0 ok, 2 a problem with the user's input (spec, data, model, machine), 143 stopped by a signal
after saving a checkpoint, anything else a failure whose reason was printed. No traceback reaches the user for
anything they can cause: every `UserError` (finetune_api.contract) is one `error:` line.
"""

from __future__ import annotations

import argparse
import importlib
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
    p.set_defaults(func=_lazy("render_command", "cmd_render"))
    p = sub.add_parser("plan", help="print the launch plan: strategy, micro-batch, checkpointing, memory and disk")
    p.add_argument("spec")
    p.add_argument("--gpu-memory", default=None, help="memory per GPU to plan for, e.g. 80GiB or 141GiB "
                   "(default: this machine's first GPU)")
    p.add_argument("--gpus", type=int, default=None, help="GPUs per node to plan for (default: the spec's, or 1)")
    p.set_defaults(func=_lazy("local_commands", "cmd_plan"))
    p = sub.add_parser("run", help="train locally (CPU or local GPUs), the way a pod does")
    p.add_argument("spec")
    p.set_defaults(func=_lazy("local_commands", "cmd_run"))
    return ap


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


if __name__ == "__main__":
    sys.exit(main())
