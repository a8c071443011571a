"""`finetune submit/status/logs/cancel/resume/list`: the user's loop against a cluster, like kubectl but for one kind.

Each command resolves the kubeconfig context and namespace as kubectl does (`--context`, `--namespace`, else the
context's namespace, else `default`), talks to the API only through `kube.Kube`, and reads only what the API
defines (`finetune_api.status`), so it works with any operator version that fills those fields. A spec is checked
here first (errors at the file's line), then the API server has the last word: what it refuses is printed in its
own field-naming words. `submit --watch` exits with the job's outcome: 0 Succeeded, 1 Failed, 143 Suspended.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from typing import Callable, Optional, TypeVar

from finetune_api import load_job
from finetune_api.contract import ExitCode, UserError
from finetune_api.job import FineTuneJobSpec

from . import job_view
from .kube import COMPLETION_INDEX, AlreadyExists, Kube
from .watching import Display, watch

T = TypeVar("T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _connect(args, file_namespace: Optional[str] = None) -> Kube:
    if args.namespace and file_namespace and args.namespace != file_namespace:
        raise UserError(f"{args.spec}: metadata.namespace is {file_namespace!r} but --namespace is "
                        f"{args.namespace!r}; drop one of them")
    return Kube(context=args.context, namespace=args.namespace or file_namespace)


def _follow(kube: Kube, name: str, args) -> int:
    timeout = getattr(args, "timeout", None)
    chunk = int(max(1, min(30, timeout))) if timeout else 30
    tty = sys.stdout.isatty()
    print(f"watching FineTuneJob {kube.namespace}/{name} (Ctrl-C stops watching; the job goes on)", flush=True)
    return watch(kube.follow(name, chunk_seconds=chunk), Display(sys.stdout, tty), name, timeout=timeout)


def cmd_submit(args) -> int:
    """Create the FineTuneJob in the cluster (or leave it be when the same spec is there); optionally watch it."""
    from finetune_api.loading import read_job_file
    from finetune_api.spec_yaml import read_spec_text

    job = load_job(args.spec)  # the file's own errors first, at their line
    body, _, _ = read_spec_text(read_job_file(args.spec), args.spec)  # as written (no defaults), read as kubectl does
    kube = _connect(args, job.metadata.namespace)
    body["metadata"]["namespace"] = kube.namespace
    name, where = job.metadata.name, f"FineTuneJob {kube.namespace}/{job.metadata.name}"
    try:
        kube.create(body)
        print(f"{where} created (context {kube.target.context}, {kube.target.server})", flush=True)
    except AlreadyExists:
        current = kube.get(name)
        if FineTuneJobSpec.model_validate(current.get("spec") or {}) == job.spec:
            print(f"{where} exists with this spec: nothing to change", flush=True)
        else:  # the API server decides (only spec.suspend may change; it names any other field)
            kube.patch(name, {"spec": body["spec"]})
            print(f"{where} updated", flush=True)
    if not args.watch:
        print(f"follow it: finetune status {name} | finetune logs {name} -f | finetune submit {args.spec} --watch")
        return 0
    return _follow(kube, name, args)


def cmd_status(args) -> int:
    """Print a FineTuneJob's phase, progress, conditions, result, pods and recent events."""
    kube = _connect(args)
    obj = kube.get(args.name)
    if args.output == "json":
        print(json.dumps(obj.get("status") or {}, indent=2))
        return 0
    print(job_view.describe(obj, kube.events(args.name), kube.pods(args.name), _now()))
    return 0


def cmd_list(args) -> int:
    """Print the FineTuneJobs of the namespace (or all) as a table."""
    kube = _connect(args)
    objs = kube.list(all_namespaces=args.all_namespaces)
    if not objs:
        print("No FineTuneJobs found" + ("" if args.all_namespaces else f" in namespace {kube.namespace}") + ".",
              file=sys.stderr)
        return 0
    print(job_view.list_table(objs, _now(), namespaces=args.all_namespaces))
    return 0


def cmd_cancel(args) -> int:
    """Suspend a FineTuneJob (pods stop after saving a checkpoint), or with --delete remove it and its children."""
    kube = _connect(args)
    where = f"FineTuneJob {kube.namespace}/{args.name}"
    obj = kube.get(args.name)
    if args.delete:
        kube.delete(args.name)
        print(f"{where} deleted: its Job, pods, ConfigMap and Service go with it (owner references); the data on "
              "volumes you named stays")
        return 0
    phase = job_view.status_of(obj).phase
    if phase in job_view.TERMINAL:
        print(f"{where} has already {phase.lower()}: nothing to stop (finetune cancel {args.name} --delete "
              "removes it)")
        return 0
    if (obj.get("spec") or {}).get("suspend"):
        print(f"{where} is already suspended (finetune resume {args.name} continues it)")
        return 0
    kube.patch(args.name, {"spec": {"suspend": True}})
    print(f"{where} suspended: its pods stop after saving a checkpoint; `finetune resume {args.name}` continues "
          f"from it, `finetune cancel {args.name} --delete` removes the job")
    return 0


def cmd_resume(args) -> int:
    """Set spec.suspend to false: the trainer pods start again from the newest checkpoint."""
    kube = _connect(args)
    where = f"FineTuneJob {kube.namespace}/{args.name}"
    obj = kube.get(args.name)
    if not (obj.get("spec") or {}).get("suspend"):
        print(f"{where} is not suspended (phase {job_view.status_of(obj).phase or 'Pending'})")
    else:
        kube.patch(args.name, {"spec": {"suspend": False}})
        print(f"{where} resumed: its pods start again from the newest checkpoint")
    return _follow(kube, args.name, args) if args.watch else 0


def _poll(check: Callable[[], Optional[T]], timeout: float, interval: float = 1.0) -> Optional[T]:
    """check() until it returns something, at most `timeout` seconds; None when time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got is not None or time.monotonic() >= deadline:
            return got
        time.sleep(interval)


def _rank_pod(kube: Kube, name: str, rank: int) -> Optional[dict]:
    """The newest pod of node rank `rank` (pod index), or None."""
    pods = [p for p in kube.pods(name) if (p["metadata"].get("annotations") or {}).get(COMPLETION_INDEX) == str(rank)]
    return pods[-1] if pods else None


def _started(pod: dict) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == "trainer" and ((cs.get("state") or {}).get("running")
                                            or (cs.get("state") or {}).get("terminated")):
            return True
    return False


def _waiting_reason(pod: dict) -> str:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        w = (cs.get("state") or {}).get("waiting")
        if w:
            return f"{w.get('reason', 'waiting')}: {w.get('message', '')}".rstrip(": ")
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False":
            return f"not scheduled: {c.get('message', '')}"
    return (pod.get("status") or {}).get("phase") or "Pending"


def cmd_logs(args) -> int:
    """Print (or with -f follow) the trainer log of one node rank's pod; follows a restarted pod too."""
    kube = _connect(args)
    obj = kube.get(args.name)
    nodes = int(((obj.get("spec") or {}).get("distributed") or {}).get("nodes", 1))
    if not 0 <= args.rank < nodes:
        raise UserError(f"--rank {args.rank}: FineTuneJob {args.name} has {nodes} node(s), ranks 0-{nodes - 1}")
    wait = args.wait if args.follow else 0
    pod = _poll(lambda: _rank_pod(kube, args.name, args.rank), wait)
    if pod is None:
        raise UserError(f"FineTuneJob {args.name} has no trainer pod of rank {args.rank} yet (phase "
                        f"{job_view.status_of(obj).phase or 'Pending'}); finetune status {args.name} says why")
    seen: set[str] = set()
    while pod is not None and pod["metadata"]["uid"] not in seen:
        pname = pod["metadata"]["name"]
        if not _started(pod):
            if not args.follow:
                raise UserError(f"pod {pname} has not started: {_waiting_reason(pod)} (finetune logs "
                                f"{args.name} -f waits for it)")
            print(f"waiting for pod {pname} to start: {_waiting_reason(pod)}", file=sys.stderr, flush=True)
            uid = pod["metadata"]["uid"]
            pod = _poll(lambda: next((p for p in [_rank_pod(kube, args.name, args.rank)]
                                      if p is not None and (_started(p) or p["metadata"]["uid"] != uid)), None), wait)
            if pod is None:
                raise UserError(f"pod {pname} did not start within {wait:.0f}s; finetune status {args.name} says why")
            continue
        if seen:
            print(f"--- pod {pname} (started again) ---", file=sys.stderr, flush=True)
        seen.add(pod["metadata"]["uid"])
        for line in kube.log_lines(pname, follow=args.follow, tail=args.tail):
            print(line, flush=args.follow)
        if not args.follow:
            break
        if job_view.status_of(kube.get(args.name)).phase in job_view.TERMINAL:
            break
        pod = _poll(lambda: next((p for p in [_rank_pod(kube, args.name, args.rank)]
                                  if p is not None and p["metadata"]["uid"] not in seen), None), args.wait)
    return ExitCode.SUCCEEDED
