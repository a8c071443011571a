"""`finetune-operator`: run the kopf operator with this package's handlers.

Why a console script and not `kopf run ...` in the image: one entry point that the Dockerfile, the Helm chart
and a developer's shell all share, with the choices that matter made once: standalone (one replica, no
peering objects to grant), cluster-wide unless FINETUNE_WATCH_NAMESPACES lists namespaces, and the liveness
endpoint the Deployment's probes call.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys


def build_parser() -> argparse.ArgumentParser:
    """The `finetune-operator` argument parser."""
    ap = argparse.ArgumentParser(prog="finetune-operator", description=__doc__.splitlines()[0])
    ap.add_argument("--namespace", action="append", default=None,
                    help="watch only this namespace (repeatable; default: $FINETUNE_WATCH_NAMESPACES or all)")
    ap.add_argument("--liveness", default=os.environ.get("FINETUNE_LIVENESS", "http://0.0.0.0:8081/healthz"),
                    help="kopf liveness endpoint URL ('' to disable)")
    ap.add_argument("--verbose", action="store_true", help="debug logging")
    return ap


def kopf_args(args: argparse.Namespace) -> list[str]:
    """The `kopf run` argv for `args`."""
    namespaces = args.namespace or [n for n in os.environ.get("FINETUNE_WATCH_NAMESPACES", "").split(",") if n]
    argv = ["run", "--standalone", "-m", "finetune_operator.handlers"]
    argv += [f"--namespace={n}" for n in namespaces] or ["--all-namespaces"]
    if args.liveness:
        argv.append(f"--liveness={args.liveness}")
    if args.verbose:
        argv.append("--verbose")
    return argv


def ensure_identity(env: dict | None = None) -> None:
    """Give kopf an identity when this uid has no user name.

    kopf names the running operator `$POD_ID`, else `<user>@<host>/...` from the passwd entry of the process's uid.
    The image runs as uid 65532 (and OpenShift as a random uid) with no such entry, and kopf would exit at start
    with `getpwuid(): uid not found`. The chart sets POD_ID to the pod's name; this covers other ways of running
    the image (`docker run`) with the host name, which in a container is the pod's or container's name.
    """
    env = os.environ if env is None else env
    if env.get("POD_ID"):
        return
    try:
        getpass.getuser()
    except (KeyError, OSError):
        env["POD_ID"] = socket.gethostname()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `finetune-operator` console script; returns when the operator stops."""
    from kopf.cli import main as kopf_main

    args = build_parser().parse_args(argv)
    ensure_identity()
    try:
        kopf_main.main(args=kopf_args(args), prog_name="finetune-operator", standalone_mode=False)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
