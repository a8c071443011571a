"""The chart's Prometheus alert rules, as data: the five things that go wrong with a fine-tune nobody is watching.

Why data in Python rather than hand-written YAML: the dashboard (dashboard.py) and the rules query the same
metric names, and tests run every expression against a real Prometheus (tests/prometheus/); keeping them
here puts those names in one grep-able place. `make charts` writes
charts/finetune-operator/rules/finetune-rules.yaml from `rule_groups()`; the chart's PrometheusRule embeds that
file; tests/prometheus/alerts_test.yaml unit-tests each alert with `promtool test rules`.

Metric sources: `finetune_*` from the trainer (names in finetune_api.contract; one series set per job,
from rank 0, present while the trainer pod runs) and `finetune_operator_*` from the operator
(operator/finetune_operator/metrics.py).
"""

from __future__ import annotations

from typing import Any

# Thresholds, in one place (the rule text and the runbook lines below quote them).
STALL_MINUTES = 20          # no optimizer step for this long while training is under way
PENDING_MINUTES = 30        # a FineTuneJob Pending (usually Unschedulable: no node has the GPUs) this long
EXPLODE_FACTOR = 2.0        # 5-minute mean loss above this multiple of the lowest 5-minute mean of the hour ...
EXPLODE_MIN_RISE = 0.5      # ... and at least this much higher (nats), so tiny losses doubling stay quiet
CHECKPOINT_OVERDUE = 1.5    # steps since the newest checkpoint above this multiple of saveEverySteps

_JOB = "{{ $labels.namespace }}/{{ $labels.job_name }}"
# The loss smoothed over 5 minutes: single noisy steps neither raise nor hide divergence, and while a healthy
# run's loss falls, its newest mean is its lowest (a raw minimum would make any falling curve look "2x up").
_SMOOTH = "avg_over_time(finetune_train_loss[5m])"


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


def training_rules() -> list[dict[str, Any]]:
    """Alerts on the trainer's metrics, one firing series per affected job."""
    return [
        _alert(
            "FineTuneTrainingStalled",
            "finetune_step < finetune_total_steps\n"
            f"and changes(finetune_step[{STALL_MINUTES}m]) == 0\n"
            f"and (time() - finetune_start_time_seconds) > {STALL_MINUTES * 60}",
            "2m", "warning",
            f"Fine-tune {_JOB} made no optimizer step for {STALL_MINUTES} minutes",
            f"FineTuneJob {_JOB} is running but has been at step {{{{ $value }}}} for {STALL_MINUTES}+ minutes: "
            "a hung collective (NCCL), a stuck data loader or a dead node. Check the trainer pods' logs "
            "(`kubectl logs -l finetune.io/job-name=...`); deleting the pods resumes from the newest checkpoint.",
        ),
        _alert(
            "FineTuneLossNaN",
            "finetune_train_loss != finetune_train_loss\nor abs(finetune_train_loss) == Inf",
            "0m", "critical",
            f"Fine-tune {_JOB} has a NaN or infinite training loss",
            f"The training loss of {_JOB} is {{{{ $value }}}}: the weights are being corrupted and every further "
            "step is wasted GPU time. Stop the job; lower training.learningRate, keep maxGradNorm > 0, check "
            "the data for empty targets, and resume from a checkpoint saved before the loss went bad.",
        ),
        _alert(
            "FineTuneLossExploding",
            f"{_SMOOTH} > {EXPLODE_FACTOR} * min_over_time({_SMOOTH}[1h:1m])\n"
            f"and ({_SMOOTH} - min_over_time({_SMOOTH}[1h:1m])) > {EXPLODE_MIN_RISE}",
            "5m", "warning",
            f"Fine-tune {_JOB}: training loss is diverging",
            f"The 5-minute mean training loss of {_JOB} ({{{{ $value | printf \"%.3f\" }}}}) is over "
            f"{EXPLODE_FACTOR:g}x its lowest 5-minute mean of the last hour: the run is diverging. Usual causes: learning "
            "rate too high for the batch size, no warmup, or a bad shard of data.",
        ),
        _alert(
            "FineTuneCheckpointOverdue",
            f"(finetune_step - finetune_last_checkpoint_step) > {CHECKPOINT_OVERDUE} * finetune_checkpoint_interval_steps",
            "5m", "warning",
            f"Fine-tune {_JOB} has not saved a checkpoint when expected",
            f"{_JOB} is {{{{ $value }}}} steps past its newest checkpoint, more than {CHECKPOINT_OVERDUE:g}x "
            "spec.output.saveEverySteps: a preemption now loses that work. Check the output volume "
            "(full? read-only?) and the trainer logs.",
        ),
    ]


def operator_rules() -> list[dict[str, Any]]:
    """Alerts on the operator's metrics (counts by phase; the FineTuneJob's status says which job and why)."""
    return [
        _alert(
            "FineTuneJobFailed",
            'finetune_operator_jobs{phase="Failed"} > 0',
            "1m", "warning",
            "{{ $value }} FineTuneJob(s) Failed",
            "{{ $value }} FineTuneJob(s) are in phase Failed. `kubectl get ftj -A` lists them; the Failed "
            "condition's reason and message say what to fix. The alert clears when they are deleted or rerun.",
        ),
        _alert(
            "FineTuneJobPendingTooLong",
            'finetune_operator_jobs{phase="Pending"} > 0',
            f"{PENDING_MINUTES}m", "warning",
            f"FineTuneJob(s) Pending for over {PENDING_MINUTES} minutes",
            f"{{{{ $value }}}} FineTuneJob(s) have been Pending for {PENDING_MINUTES}+ minutes, usually Unschedulable: "
            "no node has the GPUs, memory or tolerations the job asks for. `kubectl describe ftj` shows the "
            "Scheduled condition's message (the scheduler's reason).",
        ),
        _alert(
            "FineTuneOperatorReconcileErrors",
            "sum by (reason) (increase(finetune_operator_reconcile_errors_total[10m])) > 0",
            "10m", "warning",
            "The finetune operator keeps failing to reconcile ({{ $labels.reason }})",
            "Reconciles have failed with reason {{ $labels.reason }} for 10+ minutes; FineTuneJob status may be "
            "stale. See the operator's logs and the Warning events on the FineTuneJobs.",
        ),
    ]


def rule_groups() -> dict[str, Any]:
    """The rule file: {"groups": [...]}, the shape of both a Prometheus rule file and a PrometheusRule spec."""
    return {"groups": [
        {"name": "finetune-training", "rules": training_rules()},
        {"name": "finetune-operator", "rules": operator_rules()},
    ]}


def expressions() -> dict[str, str]:
    """Every alert's PromQL expression, by alert name (tests run each against a real Prometheus)."""
    return {r["alert"]: r["expr"] for g in rule_groups()["groups"] for r in g["rules"]}
