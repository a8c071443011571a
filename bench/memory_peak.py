"""What was alive at a run's peak GPU memory, from a FINETUNE_MEMORY_TRACE dump (trainer/finetune_trainer/memory_trace.py).

    python bench/memory_peak.py /tmp/trace/rank-0.pickle [--top 30]

Replays the allocator's trace (alloc / free_completed) to the moment the most traced bytes were allocated and
groups the live blocks by the innermost frame outside torch's own modules (where a model, peft, bitsandbytes or
Liger asked for the memory). Allocations made before recording began (the loaded weights) are not in the trace:
they are reported as one "before the trace" line from the snapshot's segments. Pure Python (pickle, no torch), so
it runs anywhere the dump is copied.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections import defaultdict

GiB = 1024 ** 3
_TORCH_INTERNAL = ("/torch/nn/modules/module.py", "/torch/autograd/", "/torch/utils/", "/torch/_", "<frozen",
                   "/torch/cuda/", "/torch/distributed/", "/contextlib.py", "/functools.py")


def where(frames: list[dict]) -> str:
    """The innermost frame that is not torch's plumbing, as file:line function."""
    for f in frames or []:
        name = f.get("filename", "")
        if name.endswith(".py") and not any(s in name for s in _TORCH_INTERNAL):
            short = "/".join(name.split("/")[-2:])
            return f"{short}:{f.get('line')} {f.get('name')}"
    return "(no python frame)"


def peak_alive(trace: list[dict]) -> tuple[int, int, dict[int, dict]]:
    """(peak traced bytes, index of the peak event, the blocks alive then) from one device's trace."""
    alive: dict[int, dict] = {}
    total = peak = peak_at = 0
    best: dict[int, dict] = {}
    for i, e in enumerate(trace):
        action = e.get("action")
        if action == "alloc":
            alive[e["addr"]] = e
            total += e["size"]
            if total > peak:
                peak, peak_at = total, i
                best = dict(alive)
        elif action == "free_completed" and e["addr"] in alive:
            total -= alive.pop(e["addr"])["size"]
    return peak, peak_at, best


def summarize(snap: dict, top: int) -> str:
    lines = []
    for dev, trace in enumerate(snap.get("device_traces") or []):
        if not trace:
            continue
        peak, at, alive = peak_alive(trace)
        groups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for e in alive.values():
            g = groups[where(e.get("frames"))]
            g[0] += e["size"]
            g[1] += 1
        # blocks allocated before the trace began and still allocated at the end (weights, optimizer state)
        traced = {e["addr"] for e in trace if e.get("action") == "alloc"}
        before = 0
        for seg in snap.get("segments") or []:
            if seg.get("device", 0) != dev:
                continue
            addr = seg["address"]
            for b in seg.get("blocks") or []:
                if b.get("state") == "active_allocated" and addr not in traced:
                    before += b["size"]
                addr += b["size"]
        lines.append(f"device {dev}: {len(trace)} events; peak of traced allocations {peak / GiB:.2f} GiB at event "
                     f"{at}; allocated before the trace and alive at its end {before / GiB:.2f} GiB")
        for key, (size, n) in sorted(groups.items(), key=lambda kv: -kv[1][0])[:top]:
            lines.append(f"  {size / GiB:8.2f} GiB {n:6d} blocks  {key}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args(argv)
    with open(a.dump, "rb") as f:
        snap = pickle.load(f)
    print(summarize(snap, a.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
