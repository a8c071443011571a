"""Operator scale benchmark: N FineTuneJobs on M kwok GPU nodes of a real control plane, pods held Running.

What it measures is what the operator owns (issue 14), each with the operator's own share of the machine:
- create -> all children exist: per job, from our create call to the watch seeing its Job (created last, after the
  ServiceAccount, ConfigMap, Service), p50/p99, for all N created at once (a burst: bounded by how fast the API
  server takes writes) and for jobs created one at a time while the operator holds the N (the latency a user sees);
  create -> status Running, p50/p99 (scheduler and kwok included);
- status lag after a pod change: a sample of trainer pods is deleted (kwok stops them as the trainer does on SIGTERM:
  exit 143), and the lag from the watch seeing the pod Failed to the watch seeing its FineTuneJob Restarting, p50/p99;
- the operator's CPU seconds and RSS per phase (from /proc), and API requests per job (the API server's audit log of
  the operator's own identity, by verb and resource), including the steady state of the periodic resync;
- with --kill, SIGKILL of the operator while children are being created, while jobs run (statuses made stale while it
  is down), while jobs finish and while they are deleted: time to converge, duplicates, orphans.

Not a test (timings live in benchmarks): run it by hand; it writes bench/results/operator-scale-<date>-<jobs>x<nodes>
[-N].json and never overwrites an earlier result.

    .venv/bin/python bench/operator_scale.py --jobs 1000 --nodes 500 --kill
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "cluster"), str(REPO / "tests")]
from controlplane import OPERATOR_USER, ControlPlane, wait_for  # noqa: E402
from pod_behaviour import HOLD, runs_long  # noqa: E402
from scenario import OperatorProcess, ftj  # noqa: E402

NS = "bench"
LABEL = "finetune.io/job-name"


def pct(values: list[float], q: float):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)


def summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": pct(values, 0.5), "p99": pct(values, 0.99), "max": pct(values, 1.0)}


class Proc:
    """CPU seconds and memory of one process, from /proc."""

    def __init__(self, pid: int):
        self.pid, self.tick = pid, os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick

    def mem(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return round(int(line.split()[1]) / 1024, 1)
        return float("nan")


class Meter:
    """The operator's CPU seconds and peak RSS across its restarts (a SIGKILLed process takes its counters along)."""

    def __init__(self, op: OperatorProcess):
        self.op, self.dead_cpu, self.peak = op, 0.0, 0.0

    def _proc(self) -> Proc:
        return Proc(self.op.proc.pid)

    def cpu(self) -> float:
        return self.dead_cpu + self._proc().cpu()

    def mem(self, key: str) -> float:
        return self._proc().mem(key)

    def peak_rss(self) -> float:
        return max(self.peak, self._proc().mem("VmHWM"))

    def kill(self) -> None:
        """SIGKILL (its CPU and peak memory so far are kept)."""
        self.dead_cpu, self.peak = self.cpu(), self.peak_rss()
        self.op.kill()

    def start(self) -> float:
        self.op.start()
        return time.monotonic()

    def kill_and_restart(self) -> float:
        """SIGKILL, then start again; returns when the new process started (monotonic)."""
        self.kill()
        return self.start()


class Watch(threading.Thread):
    """A watch of one kind in the bench namespace, calling `on(event_type, obj, now)` for each event."""

    def __init__(self, list_fn, on, **kw):
        super().__init__(daemon=True)
        self.list_fn, self.on, self.kw, self.stop = list_fn, on, kw, threading.Event()

    def run(self):
        from kubernetes import watch
        while not self.stop.is_set():
            w = watch.Watch()
            try:
                for ev in w.stream(self.list_fn, NS, timeout_seconds=60, **self.kw):
                    self.on(ev["type"], ev["object"], time.monotonic())
                    if self.stop.is_set():
                        break
            except Exception:  # noqa: BLE001 - reconnect
                time.sleep(0.2)


def add_nodes(cp: ControlPlane, count: int, gpus: int) -> float:
    started = time.monotonic()
    res = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    items = [{"apiVersion": "v1", "kind": "Node",
              "metadata": {"name": f"gpu-{i:04d}", "annotations": {"kwok.x-k8s.io/node": "fake"},
                           "labels": {"kubernetes.io/hostname": f"gpu-{i:04d}", "type": "kwok"}},
              "status": {"capacity": res, "allocatable": res}} for i in range(count)]
    for chunk in range(0, count, 100):
        cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                         "items": items[chunk:chunk + 100]}), check=True, timeout=300)

    def ready():
        nodes = cp.get_json("nodes", "-l", "type=kwok")["items"]
        ok = [n for n in nodes if not n["spec"].get("taints") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))]
        return len(ok) >= count

    wait_for(ready, 900, f"{count} kwok nodes Ready", interval=2)
    return time.monotonic() - started


def audit_counts(cp: ControlPlane, since: int) -> tuple[Counter, int]:
    entries = cp.audit_events(OPERATOR_USER)
    counts = Counter(f"{e['verb']} {(e.get('objectRef') or {}).get('resource', '-')}"
                     + (f"/{e['objectRef']['subresource']}" if (e.get("objectRef") or {}).get("subresource") else "")
                     for e in entries[since:])
    return counts, len(entries)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--nodes", type=int, default=500)
    ap.add_argument("--gpus-per-node", type=int, default=2)
    ap.add_argument("--changed-pods", type=int, default=200, help="pods deleted to measure status lag")
    ap.add_argument("--one-more", type=int, default=50, help="jobs created one at a time once all are running")
    ap.add_argument("--resync", type=float, default=30.0, help="the operator's FINETUNE_RESYNC_SECONDS")
    ap.add_argument("--kill", action="store_true", help="also SIGKILL the operator in each phase")
    ap.add_argument("--kill-batch", type=int, default=200, help="jobs created around the SIGKILL while creating")
    ap.add_argument("--timeout", type=float, default=1200)
    args = ap.parse_args()
    bin_dir = Path(subprocess.run(["bash", str(REPO / "scripts" / "install-cluster-tools.sh")], check=True,
                                  capture_output=True, text=True).stdout.strip().splitlines()[-1])
    result: dict = {"benchmark": "operator-scale", "date": datetime.date.today().isoformat(),
                    "command": "python bench/operator_scale.py " + " ".join(sys.argv[1:]),
                    "machine": f"{os.cpu_count()} CPU cores shared by etcd, kube-apiserver, controller-manager, "
                               f"scheduler, kwok, the operator and this script",
                    "jobs": args.jobs, "nodes": args.nodes, "gpus_per_node": args.gpus_per_node,
                    "operator_resync_seconds": args.resync, "pods": "held Running (kwok stage, label finetune.test/hold)"}
    with ControlPlane(bin_dir, Path(tempfile.mkdtemp(prefix="finetune-bench-"))) as cp:
        import kubernetes
        from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi
        cfg = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cp.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        client = kubernetes.client.ApiClient(cfg)
        core, batch, custom = CoreV1Api(client), BatchV1Api(client), CustomObjectsApi(client)
        result["nodes_ready_seconds"] = round(add_nodes(cp, args.nodes, args.gpus_per_node), 1)
        cp.kubectl("apply", "--server-side", "-f", str(REPO / "crds" / "finetunejobs.finetune.io.yaml"), check=True)
        wait_for(lambda: cp.kubectl("get", "ftj", "-A").returncode == 0, 60, "the CRD served")
        cp.create_namespace(NS)
        names = [f"scale-{i:04d}" for i in range(args.jobs)]
        created_at: dict[str, float] = {}
        job_seen: dict[str, float] = {}
        phase_at: dict[str, dict[str, float]] = {n: {} for n in names}
        pod_failed_at: dict[str, float] = {}
        lock = threading.Lock()

        def on_job(kind, obj, now):
            owner = (obj.metadata.labels or {}).get(LABEL)
            if kind == "ADDED" and owner:
                with lock:
                    job_seen.setdefault(owner, now)

        def on_ftj(kind, obj, now):
            name, phase = obj["metadata"]["name"], (obj.get("status") or {}).get("phase")
            if phase and name in phase_at:
                with lock:
                    phase_at[name].setdefault(phase, now)
                    phase_at[name]["last:" + phase] = now

        def on_pod(kind, obj, now):
            owner = (obj.metadata.labels or {}).get(LABEL)
            if owner and obj.status and obj.status.phase == "Failed":
                with lock:
                    pod_failed_at.setdefault(owner, now)

        watches = [Watch(batch.list_namespaced_job, on_job, label_selector=LABEL),
                   Watch(lambda ns, **kw: custom.list_namespaced_custom_object("finetune.io", "v1alpha1", ns,
                                                                                "finetunejobs", **kw), on_ftj),
                   Watch(core.list_namespaced_pod, on_pod, label_selector=LABEL)]
        for w in watches:
            w.start()
        env = {"FINETUNE_RESYNC_SECONDS": str(args.resync), "FINETUNE_OPERATOR_METRICS_PORT": "0",
               "FINETUNE_WATCH_TIMEOUT": "300", "FINETUNE_TRAINER_IMAGE": "registry.invalid/t:1"}
        op = OperatorProcess(cp, kubeconfig=cp.client_kubeconfig(OPERATOR_USER), env=env,
                             log=cp.logs / "operator.log").start()
        proc = Meter(op)
        wait_for(lambda: "watch" in " ".join(audit_counts(cp, 0)[0]), 60, "the operator's watches")
        phases: dict = {}

        def measure(name: str, fn):
            print(f"phase {name} ...", file=sys.stderr, flush=True)
            _, seen = audit_counts(cp, 0)
            cpu0, t0 = proc.cpu(), time.monotonic()
            extra = fn() or {}
            counts, _ = audit_counts(cp, seen)
            phases[name] = {"wall_seconds": round(time.monotonic() - t0, 1),
                            "operator_cpu_seconds": round(proc.cpu() - cpu0, 2),
                            "operator_rss_mib": proc.mem("VmRSS"), "api_requests": sum(counts.values()),
                            "api_requests_per_job": round(sum(counts.values()) / args.jobs, 2),
                            "requests": dict(counts.most_common())} | extra

        def create_all():
            body = lambda n: runs_long().on(ftj(n, NS, gpus=1))  # noqa: E731

            def create(n):
                created_at[n] = time.monotonic()
                custom.create_namespaced_custom_object("finetune.io", "v1alpha1", NS, "finetunejobs", body(n))

            with cf.ThreadPoolExecutor(8) as pool:
                list(pool.map(create, names))
            wait_for(lambda: len(job_seen) >= args.jobs, args.timeout, "every Job", interval=0.5)
            lat = [job_seen[n] - created_at[n] for n in names]
            wait_for(lambda: all("Running" in phase_at[n] for n in names), args.timeout, "every job Running", interval=1)
            return {"create_to_all_children_seconds": summary(lat),
                    "create_to_running_seconds": summary([phase_at[n]["Running"] - created_at[n] for n in names])}

        measure("create", create_all)
        def steady():  # a measured window (two resync rounds over every running job), not a wait for a condition
            time.sleep(2 * args.resync)
            return {"seconds": 2 * args.resync}

        measure("steady", steady)

        def one_more():  # the latency a user sees: one job at a time, while the operator holds all the others
            extra = [f"more-{i:03d}" for i in range(args.one_more)]
            phase_at.update({n: {} for n in extra})
            lat = []
            for n in extra:
                created_at[n] = time.monotonic()
                custom.create_namespaced_custom_object("finetune.io", "v1alpha1", NS, "finetunejobs",
                                                       runs_long().on(ftj(n, NS, gpus=1)))
                wait_for(lambda: n in job_seen, args.timeout, f"the Job of {n}", interval=0.01)
                lat.append(job_seen[n] - created_at[n])
            for n in extra:  # out of the way of the faults below (no GPU was left for them)
                custom.delete_namespaced_custom_object("finetune.io", "v1alpha1", NS, "finetunejobs", n)
            return {"one_job_at_a_time_create_to_all_children_seconds": summary(lat)}

        measure("one_more", one_more)

        def pod_change():
            sample = names[:args.changed_pods]
            pods = {p.metadata.labels[LABEL]: p.metadata.name
                    for p in core.list_namespaced_pod(NS, label_selector=LABEL).items
                    if p.metadata.labels.get(LABEL) in sample and p.status.phase == "Running"}
            for owner, pod in pods.items():
                core.delete_namespaced_pod(pod, NS)
            wait_for(lambda: all("Restarting" in phase_at[n] for n in pods), args.timeout, "Restarting", interval=0.5)
            lag = [phase_at[n]["Restarting"] - pod_failed_at[n] for n in pods if n in pod_failed_at]
            wait_for(lambda: all(phase_at[n].get("last:Running", 0) > phase_at[n]["Restarting"] for n in pods),
                     args.timeout, "Running again", interval=1)
            return {"pods_changed": len(pods), "pod_failed_to_status_seconds": summary(lag)}

        measure("pod_change", pod_change)

        if args.kill:
            faults = {}

            def stale_while_down():
                proc.kill()
                for n in names[:100]:  # someone overwrites statuses while no operator runs
                    custom.patch_namespaced_custom_object_status("finetune.io", "v1alpha1", NS, "finetunejobs", n,
                                                                 {"status": {"message": "stale"}})
                t0 = proc.start()
                wait_for(lambda: all(custom.get_namespaced_custom_object_status(
                    "finetune.io", "v1alpha1", NS, "finetunejobs", n)["status"].get("message") != "stale"
                    for n in names[:100]), args.timeout, "stale statuses corrected", interval=1)
                return {"restart_to_converged_seconds": round(time.monotonic() - t0, 2)}

            print("fault: running ...", file=sys.stderr, flush=True)
            faults["running"] = stale_while_down()

            def creating():  # more jobs (no GPU left for them: their pods wait), SIGKILL when the first has its Job
                extra = [f"extra-{i:04d}" for i in range(args.kill_batch)]
                phase_at.update({n: {} for n in extra})
                with cf.ThreadPoolExecutor(8) as pool:
                    list(pool.map(lambda n: custom.create_namespaced_custom_object(
                        "finetune.io", "v1alpha1", NS, "finetunejobs", runs_long().on(ftj(n, NS, gpus=1))), extra))
                wait_for(lambda: any(n in job_seen for n in extra), args.timeout, "the first extra Job", interval=0.05)
                proc.kill()
                seen_at_kill = sum(n in job_seen for n in extra)
                t0 = proc.start()
                wait_for(lambda: all(n in job_seen for n in extra), args.timeout, "every extra Job", interval=0.5)
                took = max(job_seen[n] for n in extra) - t0
                wait_for(lambda: all(phase_at[n] for n in extra), args.timeout, "a status on each")
                return {"jobs": len(extra), "jobs_with_children_at_kill": seen_at_kill,
                        "restart_to_all_children_seconds": round(took, 2)}

            print("fault: creating ...", file=sys.stderr, flush=True)
            faults["creating"] = creating()
            names.extend(f"extra-{i:04d}" for i in range(args.kill_batch))

            def finishing():
                pods = [p for p in core.list_namespaced_pod(NS, label_selector=LABEL).items if p.status.phase == "Running"]
                running = sorted({p.metadata.labels[LABEL] for p in pods})
                with cf.ThreadPoolExecutor(8) as pool:  # the trainers finish: kill the operator in the middle
                    done = pool.map(lambda p: core.patch_namespaced_pod(p.metadata.name, NS, {"metadata": {
                        "labels": {HOLD: None}}}), pods)
                    for i, _ in enumerate(done):
                        if i == len(pods) // 2:
                            t0 = proc.kill_and_restart()
                wait_for(lambda: all("Succeeded" in phase_at[n] for n in running), args.timeout,
                         "every running job Succeeded", interval=1)
                return {"jobs": len(running), "restart_to_converged_seconds": round(time.monotonic() - t0, 2)}

            print("fault: finishing ...", file=sys.stderr, flush=True)
            faults["finishing"] = finishing()
            events = core.list_namespaced_event(NS, field_selector="involvedObject.kind=FineTuneJob").items
            per = Counter((e.involved_object.name, e.reason) for e in events)
            restarted = set(names[:args.changed_pods])  # these did go Running -> Restarting -> Running
            faults["duplicate_events"] = sorted(f"{n}:{r}x{c}" for (n, r), c in per.items()
                                                if c > 1 and r in ("Pending", "Running", "Succeeded")
                                                and n not in restarted)[:20]
            jobs_per = Counter(j.metadata.labels.get(LABEL) for j in batch.list_namespaced_job(NS).items)
            faults["duplicate_children"] = sorted(n for n, c in jobs_per.items() if c > 1)

            def deleting():
                custom.delete_collection_namespaced_custom_object("finetune.io", "v1alpha1", NS, "finetunejobs")
                t0 = proc.kill_and_restart()  # while the garbage collector deletes the children
                wait_for(lambda: not batch.list_namespaced_job(NS).items
                         and not core.list_namespaced_config_map(NS, label_selector=LABEL).items,
                         args.timeout, "every child garbage-collected", interval=2)
                return {"restart_to_no_orphans_seconds": round(time.monotonic() - t0, 2)}

            print("fault: deleting ...", file=sys.stderr, flush=True)
            faults["deleting"] = deleting()
            result["faults"] = faults
        result["operator_peak_rss_mib"] = proc.peak_rss()
        op.stop()
        for w in watches:
            w.stop.set()
        result["phases"] = phases
    out = REPO / "bench" / "results" / f"operator-scale-{result['date']}-{args.jobs}x{args.nodes}.json"
    n = 2
    while out.exists():  # never overwrite an earlier result
        out = out.with_name(f"operator-scale-{result['date']}-{args.jobs}x{args.nodes}-{n}.json")
        n += 1
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
