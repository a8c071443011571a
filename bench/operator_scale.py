"""Operator scale benchmark: 200 FineTuneJobs applied at once to the test control plane.

Reports the time until every job's children (ConfigMap, Service, Indexed Job) exist, create->Running
latency per job (p50/p99, measured by polling with our own clock), and the operator process's peak memory.
Not a test (timings live in benchmarks): run it by hand, it writes bench/results/operator-scale-<date>.json.

    .venv/bin/python bench/operator_scale.py [--jobs 200] [--nodes 25]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "cluster"))
from controlplane import CHAOS_FAIL_LABEL, ControlPlane  # noqa: E402

CHAOS = CHAOS_FAIL_LABEL  # kwok's stage annotations: keep pods Running for the whole benchmark
RUN_LONG = {CHAOS + "/delay": "30m", CHAOS + "/jitter-delay": "30m"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job(i: int) -> dict:
    return {"apiVersion": "finetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": f"scale-{i:03d}", "namespace": "bench", "annotations": RUN_LONG},
            "spec": {"model": {"path": "/opt/models/tiny"},
                     "dataset": {"paths": ["/opt/data/train.jsonl"], "format": "messages"},
                     "training": {"maxSteps": 10}, "distributed": {"gpusPerNode": 1},
                     "output": {"path": "/tmp/out"}}}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=25, help="fake nodes of 8 GPUs each")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    bin_dir = Path(subprocess.run(["bash", str(REPO / "scripts" / "install-cluster-tools.sh")], check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1])
    with ControlPlane(bin_dir, Path(tempfile.mkdtemp(prefix="finetune-bench-"))) as cp:
        for n in range(args.nodes):
            cp.add_gpu_node(f"gpu-{n:03d}", gpus=8)
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "finetunejobs.finetune.io.yaml"), check=True)
        cp.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.finetune.io", check=True)
        cp.create_namespace("bench")
        env = dict(os.environ, KUBECONFIG=str(cp.kubeconfig), FINETUNE_RESYNC_SECONDS="5",
                   FINETUNE_OPERATOR_METRICS_PORT=str(free_port()), FINETUNE_TRAINER_IMAGE="registry.invalid/t:1")
        op = subprocess.Popen([str(REPO / ".venv" / "bin" / "finetune-operator"), "--liveness", ""], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(cp.logs / "operator.log", "w"))
        try:
            time.sleep(3)  # let kopf list and start watching before the burst (not part of the measurement)
            manifest = {"apiVersion": "v1", "kind": "List", "items": [job(i) for i in range(args.jobs)]}
            t0 = time.monotonic()
            cp.kubectl("apply", "-f", "-", input=json.dumps(manifest), check=True)
            applied = time.monotonic() - t0
            running: dict[str, float] = {}
            per_object: dict[str, float] = {}
            children_done = None
            while time.monotonic() - t0 < args.timeout:
                ftjs = json.loads(cp.kubectl("get", "ftj", "-n", "bench", "-o", "json", check=True).stdout)["items"]
                now = time.monotonic() - t0
                wall = time.time()
                for f in ftjs:
                    if (f.get("status") or {}).get("phase") in ("Running", "Succeeded"):
                        name = f["metadata"]["name"]
                        if name not in running:
                            running[name] = now
                            created = datetime.datetime.fromisoformat(
                                f["metadata"]["creationTimestamp"].replace("Z", "+00:00")).timestamp()
                            per_object[name] = wall - created
                if children_done is None:
                    counts = [len(json.loads(cp.kubectl("get", kind, "-n", "bench", "-l",
                                                        "app.kubernetes.io/managed-by=finetune-operator",
                                                        "-o", "json", check=True).stdout)["items"])
                              for kind in ("configmaps", "services", "jobs.batch")]
                    if min(counts) >= args.jobs:
                        children_done = time.monotonic() - t0
                if len(running) >= args.jobs and children_done is not None:
                    break
                time.sleep(0.25)
            lat = sorted(running.values())
            obj_lat = sorted(per_object.values())
            result = {
                "benchmark": "operator-scale", "date": datetime.date.today().isoformat(),
                "command": "python bench/operator_scale.py " + " ".join(sys.argv[1:]),
                "machine": f"{os.cpu_count()} CPU cores (control plane, kwok and operator on one host)",
                "jobs": args.jobs, "nodes": args.nodes, "apply_seconds": round(applied, 2),
                "all_children_created_seconds": None if children_done is None else round(children_done, 2),
                "running": len(lat),
                "apply_start_to_running_p50_seconds": round(statistics.median(lat), 2) if lat else None,
                "apply_start_to_running_p99_seconds": round(lat[max(0, int(0.99 * len(lat)) - 1)], 2) if lat else None,
                "note": "create->Running uses each object's creationTimestamp (1 s resolution) and the poll's wall clock "
                        "(0.25 s poll + one list per poll)",
                "create_to_running_p50_seconds": round(statistics.median(obj_lat), 2) if obj_lat else None,
                "create_to_running_p99_seconds": round(obj_lat[max(0, int(0.99 * len(obj_lat)) - 1)], 2)
                if obj_lat else None,
                "operator_peak_rss_mib": round(peak_rss_mib(op.pid), 1),
            }
        finally:
            op.terminate()
            op.wait(timeout=30)
    out = REPO / "bench" / "results" / f"operator-scale-{result['date']}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return 0 if result["running"] == args.jobs else 1


if __name__ == "__main__":
    raise SystemExit(main())
