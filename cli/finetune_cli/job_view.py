"""What a person sees of a FineTuneJob in a terminal: the progress line, condition changes, status, the table.

Why pure: every line here is read off the object as the API defines it (`finetune_api.status`: phase,
conditions, progress, result, message) and nothing else — not the operator's internals — so the same view works
whoever writes the status, and is tested table by table without a cluster. The clock comes in as `now`.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from finetune_api.contract import ExitCode
from finetune_api.status import FineTuneJobStatus

TERMINAL = ("Succeeded", "Failed")


def status_of(obj: dict) -> FineTuneJobStatus:
    """The object's status as the API model (an unreadable or absent status reads as empty)."""
    try:
        return FineTuneJobStatus.model_validate(obj.get("status") or {})
    except ValueError:
        return FineTuneJobStatus()


def parse_time(text: Optional[str]) -> Optional[dt.datetime]:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: Optional[float]) -> str:
    """`42s`, `3m12s`, `2h05m`, `3d4h` (kubectl's AGE style)."""
    if seconds is None:
        return "?"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def age(timestamp: Optional[str], now: dt.datetime) -> str:
    t = parse_time(timestamp)
    return duration((now - t).total_seconds()) if t else "?"


def bar(fraction: float, width: int = 24) -> str:
    """`[#########...............]`."""
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def rate(tokens_per_second: float) -> str:
    if tokens_per_second >= 1e6:
        return f"{tokens_per_second / 1e6:.1f}M tok/s"
    if tokens_per_second >= 1e4:
        return f"{tokens_per_second / 1e3:.0f}k tok/s"
    return f"{tokens_per_second:.0f} tok/s"


def progress_line(st: FineTuneJobStatus, width: int = 24) -> str:
    """One line: phase, bar, step/total, loss, eval loss, tokens/s, ETA (what is known of it)."""
    parts = [st.phase or "Pending"]
    p = st.progress
    if p is not None and p.total_steps:
        parts.append(bar(p.step / p.total_steps, width) + f" {p.percent or f'{p.step / p.total_steps:.0%}'}")
        parts.append(f"step {p.step}/{p.total_steps}")
    elif p is not None and p.step:
        parts.append(f"step {p.step}")
    if p is not None:
        if p.loss is not None:
            parts.append(f"loss {p.loss:.4f}")
        if p.eval_loss is not None:
            parts.append(f"eval {p.eval_loss:.4f}")
        if p.tokens_per_second:
            parts.append(rate(p.tokens_per_second))
        if p.eta_seconds is not None and st.phase == "Running":
            parts.append(f"ETA {duration(p.eta_seconds)}")
    restarts = getattr(st, "restarts", None)  # status.restarts: counted by operators that report it
    if restarts:
        parts.append(f"restarts {restarts}")
    return "  ".join(parts)


def condition_changes(before: Optional[FineTuneJobStatus], after: FineTuneJobStatus) -> list[str]:
    """A line per condition that is new or whose status or reason changed: `Type=Status Reason: message`."""
    old = {c.type: (c.status, c.reason) for c in (before.conditions if before else [])}
    lines = []
    for c in after.conditions:
        if old.get(c.type) != (c.status, c.reason):
            lines.append(f"{c.type}={c.status} {c.reason}" + (f": {c.message}" if c.message else ""))
    return lines


def _failed_condition(st: FineTuneJobStatus):
    return next((c for c in st.conditions if c.type == "Failed" and c.status == "True"), None)


def outcome(st: FineTuneJobStatus) -> tuple[Optional[int], list[str]]:
    """(exit code, closing lines) once the job has ended or stopped; (None, []) while it runs or waits.

    Succeeded exits 0, Failed 1 (the reason and message printed), Suspended 143 (stopped, a checkpoint kept:
    `finetune resume` continues it) — the codes `finetune run` uses for the same outcomes.
    """
    if st.phase == "Succeeded":
        r = st.result
        lines = ["Succeeded: " + (st.message or "training finished")]
        if r is not None and r.output_path:
            lines.append(f"output: {r.output_path}" + (f"  (manifest sha256 {r.manifest_sha256})"
                                                       if r.manifest_sha256 else ""))
        return ExitCode.SUCCEEDED, lines
    if st.phase == "Failed":
        c = _failed_condition(st)
        why = f"{c.reason}: {c.message}" if c else (st.message or "no reason recorded")
        return ExitCode.FAILED, [f"Failed: {why}"]
    if st.phase == "Suspended":
        return ExitCode.PREEMPTED, [f"Suspended: {st.message or 'spec.suspend is true'}"]
    return None, []


def gpus(spec: dict) -> str:
    """`nodes x GPUs per node` of a spec as written (`1x1`, `2x8`, `1xauto`, `1xcpu`)."""
    d = spec.get("distributed") or {}
    per = d.get("gpusPerNode", "auto")
    return f"{d.get('nodes', 1)}x{'cpu' if per == 0 else per}"


def model_name(spec: dict) -> str:
    m = spec.get("model") or {}
    return m.get("hubId") or m.get("path") or "?"


def table(rows: list[list[str]]) -> str:
    """Columns padded like kubectl's (three spaces between, no trailing blanks)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def list_table(objs: list[dict], now: dt.datetime, namespaces: bool = False) -> str:
    """`finetune list`: kubectl get ftj's columns plus MODEL, METHOD and GPUS."""
    head = ["NAME", "PHASE", "PROGRESS", "LOSS", "MODEL", "METHOD", "GPUS", "AGE"]
    rows = [(["NAMESPACE"] if namespaces else []) + head]
    for o in sorted(objs, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        st, spec = status_of(o), o.get("spec") or {}
        p = st.progress
        loss = f"{p.loss:.4f}" if p is not None and p.loss is not None else ""
        row = [o["metadata"]["name"], st.phase or "", (p.percent or "") if p else "", loss, model_name(spec),
               (spec.get("method") or {}).get("type", "lora"), gpus(spec),
               age(o["metadata"].get("creationTimestamp"), now)]
        rows.append(([o["metadata"].get("namespace", "")] if namespaces else []) + row)
    return table(rows)


def describe(obj: dict, events: list[dict], pods: list[dict], now: dt.datetime) -> str:
    """`finetune status NAME`: the job, its progress, conditions, result, pods and recent events."""
    st, spec, meta = status_of(obj), obj.get("spec") or {}, obj["metadata"]
    lines = [f"Name:       {meta['name']}", f"Namespace:  {meta.get('namespace', '')}",
             f"Model:      {model_name(spec)}   method {(spec.get('method') or {}).get('type', 'lora')}   "
             f"GPUs {gpus(spec)}",
             f"Phase:      {progress_line(st)}"]
    if st.message:
        lines.append(f"Message:    {st.message}")
    queue = (meta.get("labels") or {}).get("kueue.x-k8s.io/queue-name")
    if queue:
        lines.append(f"Queue:      {queue} (Kueue)")
    if st.start_time:
        end = parse_time(st.completion_time) or now
        lines.append(f"Started:    {st.start_time} ({duration((end - parse_time(st.start_time)).total_seconds())}"
                     f"{' ran' if st.completion_time else ' ago'})")
    if st.result is not None and st.result.output_path:
        lines.append(f"Output:     {st.result.output_path}"
                     + (f"  (manifest sha256 {st.result.manifest_sha256})" if st.result.manifest_sha256 else ""))
    if st.conditions:
        lines += ["Conditions:", "  " + table([["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"]] + [
            [c.type, c.status, c.reason, age(c.last_transition_time, now), c.message.replace("\n", " ")]
            for c in st.conditions]).replace("\n", "\n  ")]
    if pods:
        lines += ["Pods:", "  " + table([["NAME", "RANK", "PHASE", "NODE", "AGE"]] + [
            [p["metadata"]["name"], (p["metadata"].get("annotations") or {}).get(
                "batch.kubernetes.io/job-completion-index", "?"), (p.get("status") or {}).get("phase", ""),
             (p.get("spec") or {}).get("nodeName") or "-", age(p["metadata"].get("creationTimestamp"), now)]
            for p in pods]).replace("\n", "\n  ")]
    if events:
        lines += ["Events:", "  " + table([["TYPE", "REASON", "AGE", "MESSAGE"]] + [
            [e.get("type", ""), e.get("reason", ""), age(e.get("lastTimestamp") or e.get("eventTime"), now),
             (e.get("message") or "").replace("\n", " ")] for e in events[-10:]]).replace("\n", "\n  ")]
    return "\n".join(lines)
