"""bench/memory_peak.py: the allocator trace replayed to its peak, grouped by who allocated (a planner miss's
evidence). A synthetic trace in the shape PyTorch's `torch.cuda.memory._snapshot()` writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "memory_peak.py"
spec = importlib.util.spec_from_file_location("memory_peak", BENCH)
memory_peak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_peak)
GiB = 1024 ** 3


def frames(where: str) -> list[dict]:
    return [{"filename": "/v/torch/nn/modules/module.py", "line": 1, "name": "_call_impl"},
            {"filename": f"/v/site-packages/{where}.py", "line": 7, "name": "forward"}]


def test_the_peak_is_what_was_alive_at_the_most_allocated_moment_by_its_allocator():
    trace = [{"action": "alloc", "addr": 1, "size": 2 * GiB, "frames": frames("peft/dropout")},
             {"action": "alloc", "addr": 2, "size": 1 * GiB, "frames": frames("bitsandbytes/ops")},
             {"action": "free_requested", "addr": 1, "size": 2 * GiB},
             {"action": "free_completed", "addr": 1, "size": 2 * GiB},
             {"action": "alloc", "addr": 3, "size": GiB // 2, "frames": frames("bitsandbytes/ops")}]
    peak, at, alive = memory_peak.peak_alive(trace)
    assert (peak, at, sorted(alive)) == (3 * GiB, 1, [1, 2])  # not the later, smaller total
    snap = {"device_traces": [trace],
            "segments": [{"device": 0, "address": 100, "blocks": [{"size": 5 * GiB, "state": "active_allocated"},
                                                                  {"size": GiB, "state": "inactive"}]}]}
    text = memory_peak.summarize(snap, top=5)
    lines = text.splitlines()
    assert "peak of traced allocations 3.00 GiB" in lines[0] and "before the trace and alive at its end 5.00" in lines[0]
    assert "2.00 GiB" in lines[1] and "peft/dropout.py:7 forward" in lines[1]  # torch's own frames skipped
    assert "1.00 GiB" in lines[2] and "bitsandbytes/ops.py:7" in lines[2]
