"""The chart's Grafana dashboard, built with grafana-foundation-sdk, and the generator of the chart's monitoring files.

Why the SDK rather than hand-written JSON: Grafana's own typed builders emit a dashboard model Grafana accepts
(schemaVersion, field names, panel options), so the JSON is valid by construction; we add only what the SDK
leaves to us — unique panel ids — and tests run every query against a real Prometheus (tests/prometheus/).

    make charts     # = python -m finetune_monitoring.dashboard: writes charts/finetune-operator/dashboards/
                    # finetune.json and charts/finetune-operator/rules/finetune-rules.yaml

Both files are checked in (the chart ships them with `.Files.Get`); tests/unit/monitoring/test_dashboard.py fails
when they are stale. This package is a build step, not part of the operator: the SDK is a dev dependency, and
neither the operator image nor the distribution carries it. Rows: jobs overview (operator), per-job training curves, throughput and MFU, GPU memory,
ETA and checkpoints; variables: data source, namespace, FineTuneJob.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml
from grafana_foundation_sdk.builders import bargauge, common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueGraphMode, VizOrientation
from grafana_foundation_sdk.models.dashboard import (DashboardCursorSync, DataSourceRef, VariableOption,
                                                     VariableRefresh, VariableSort)

from .alerts import rule_groups

CHART = Path(__file__).resolve().parents[2] / "charts" / "finetune-operator"
DASHBOARD_FILE = CHART / "dashboards" / "finetune.json"
RULES_FILE = CHART / "rules" / "finetune-rules.yaml"

UID = "finetune-operator"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The per-job selector: both variables are multi-value with "All" = .*
SEL = '{namespace=~"$namespace", job_name=~"$job"}'


def _q(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS)
    return q.instant() if instant else q.range()


def _series(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "",
            w: int = 12, h: int = 8) -> timeseries.Panel:
    p = timeseries.Panel().title(title).datasource(DS).unit(unit).span(w).height(h).fill_opacity(10)
    if description:
        p = p.description(description)
    for ref, q in zip("ABCDEFGH", queries):
        p = p.with_target(q.ref_id(ref))
    return p


def _stat(title: str, unit: str, query: prometheus.Dataquery, description: str = "", w: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DS).unit(unit).span(w).height(4)
            .graph_mode(BigValueGraphMode.NONE).reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            .with_target(query.ref_id("A")))


def _variables() -> list[Any]:
    def label_values(name: str, label: str, query: str, text: str) -> dashboard.QueryVariable:
        return (dashboard.QueryVariable(name).label(text).datasource(DS).query(f"label_values({query}, {label})")
                .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
                .multi(True).include_all(True).all_value(".*")
                .current(VariableOption(selected=True, text=["All"], value=["$__all"])))

    return [
        dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_values("namespace", "namespace", "finetune_step", "Namespace"),
        label_values("job", "job_name", 'finetune_step{namespace=~"$namespace"}', "FineTuneJob"),
    ]


def _overview() -> dashboard.Row:
    return (dashboard.Row("Jobs overview")
            .with_panel(_stat("Running", "short", _q('sum(finetune_operator_jobs{phase="Running"})', instant=True),
                              "FineTuneJobs in phase Running (operator)."))
            .with_panel(_stat("Pending", "short", _q('sum(finetune_operator_jobs{phase="Pending"})', instant=True),
                              "Pending: waiting for nodes, or Unschedulable (see `kubectl describe ftj`)."))
            .with_panel(_stat("Failed", "short", _q('sum(finetune_operator_jobs{phase="Failed"})', instant=True),
                              "Failed FineTuneJobs; the Failed condition says why."))
            .with_panel(_stat("Succeeded", "short",
                              _q('sum(finetune_operator_jobs{phase="Succeeded"})', instant=True)))
            .with_panel(_series("Jobs by phase", "short", _q("sum by (phase) (finetune_operator_jobs)", "{{phase}}"),
                                w=8))
            .with_panel(_series("Phase transitions", "short",
                                _q("sum by (from_phase, to_phase) "
                                   "(increase(finetune_operator_transitions_total[$__rate_interval]))",
                                   "{{from_phase}} → {{to_phase}}"), w=8))
            .with_panel(_series("Reconcile duration and errors", "s",
                                _q("histogram_quantile(0.95, sum by (le) "
                                   "(rate(finetune_operator_reconcile_duration_seconds_bucket[$__rate_interval])))",
                                   "p95 reconcile"),
                                _q("sum by (reason) (rate(finetune_operator_reconcile_errors_total[$__rate_interval]))",
                                   "errors/s {{reason}}"), w=8))
            .with_panel(bargauge.Panel().title("Progress of running fine-tunes").datasource(DS).unit("percentunit")
                        .min(0).max(1).span(24).height(6).orientation(VizOrientation.HORIZONTAL)
                        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
                        .with_target(_q(f"finetune_step{SEL} / finetune_total_steps{SEL}",
                                        "{{namespace}}/{{job_name}}", instant=True).ref_id("A"))))


def _training() -> dashboard.Row:
    return (dashboard.Row("Training: $namespace / $job")
            .with_panel(_series("Loss", "short", _q(f"finetune_train_loss{SEL}", "train {{job_name}}"),
                                _q(f"finetune_eval_loss{SEL}", "eval {{job_name}}"),
                                description="Token-weighted training loss per step, and validation loss."))
            .with_panel(_series("Learning rate", "short", _q(f"finetune_learning_rate{SEL}", "{{job_name}}")))
            .with_panel(_series("Gradient norm (before clipping)", "short",
                                _q(f"finetune_grad_norm{SEL}", "{{job_name}}")))
            .with_panel(_series("Step", "short", _q(f"finetune_step{SEL}", "step {{job_name}}"),
                                _q(f"finetune_total_steps{SEL}", "total {{job_name}}"))))


def _throughput() -> dashboard.Row:
    return (dashboard.Row("Throughput and GPUs")
            .with_panel(_series("Tokens/s", "short",
                                _q(f"finetune_tokens_per_second{SEL}", "tokens/s {{job_name}}"),
                                _q(f"finetune_trainable_tokens_per_second{SEL}", "trainable tokens/s {{job_name}}"),
                                _q(f"sum by (namespace, job_name) (rate(finetune_tokens_processed_total{SEL}"
                                   "[$__rate_interval]))", "tokens/s (counter) {{job_name}}"),
                                description="Non-padding tokens, and tokens with a training target, all processes."))
            .with_panel(_series("MFU", "percentunit", _q(f"finetune_mfu_ratio{SEL}", "{{job_name}}"),
                                description="Model FLOPs utilisation per GPU (CUDA runs only)."))
            .with_panel(_series("GPU memory allocated by rank", "bytes",
                                _q(f"finetune_gpu_memory_allocated_bytes{SEL}", "{{job_name}} rank {{rank}}")))
            .with_panel(_series("GPU memory reserved by rank", "bytes",
                                _q(f"finetune_gpu_memory_reserved_bytes{SEL}", "{{job_name}} rank {{rank}}"))))


def _eta() -> dashboard.Row:
    return (dashboard.Row("ETA and checkpoints")
            .with_panel(_series("ETA", "s", _q(f"finetune_eta_seconds{SEL}", "{{job_name}}"), w=8))
            .with_panel(_series("Steps since the newest checkpoint", "short",
                                _q(f"finetune_step{SEL} - finetune_last_checkpoint_step{SEL}", "{{job_name}}"),
                                _q(f"finetune_checkpoint_interval_steps{SEL}", "saveEverySteps {{job_name}}"),
                                w=8))
            .with_panel(_series("Checkpoints saved", "short",
                                _q(f"finetune_checkpoints_saved_total{SEL}", "{{job_name}}"),
                                _q(f"finetune_last_checkpoint_step{SEL}", "newest checkpoint step {{job_name}}"),
                                w=8)))


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a dict), panel ids numbered 1.. in layout order."""
    b = (dashboard.Dashboard("Fine-tuning").uid(UID).tags(["finetune", "llm"]).editable()
         .description("FineTuneJobs (finetune-operator): phases, loss, learning rate, throughput, MFU, GPU memory, ETA.")
         .refresh("30s").time("now-6h", "now").tooltip(DashboardCursorSync.CROSSHAIR).timezone("browser")
         .variables(_variables()))
    for row in (_overview(), _training(), _throughput(), _eta()):
        b = b.with_row(row)
    model = json.loads(json.dumps(b.build(), cls=JSONEncoder))
    model["panels"] = _expand_rows(model["panels"])
    ids = itertools.count(1)
    for panel in _walk(model["panels"]):
        panel["id"] = next(ids)
    return model


def _expand_rows(panels: list[dict]) -> list[dict]:
    """Open every row: Grafana keeps an open row's panels beside it, a collapsed row's inside it (the SDK's way)."""
    flat = []
    for p in panels:
        inner = p.pop("panels", []) if p.get("type") == "row" else []
        if p.get("type") == "row":
            p["collapsed"], p["panels"] = False, []
        flat += [p, *inner]
    return flat


def _walk(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from _walk(p.get("panels") or [])


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel, rows' panels included."""
    return [(p["title"], t["expr"]) for p in _walk(model["panels"]) for t in p.get("targets") or []]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None)


_Dumper.add_representer(str, _str)


def render_dashboard() -> str:
    """The dashboard file's text (stable: sorted keys, so a regenerated file diffs cleanly)."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_rules() -> str:
    """The rule file's text (Prometheus rule-file format; also the body of the chart's PrometheusRule spec)."""
    header = "# Generated by `python -m finetune_monitoring.dashboard` from monitoring/finetune_monitoring/alerts.py. Do not edit.\n"
    return header + yaml.dump(rule_groups(), Dumper=_Dumper, sort_keys=False, width=120, allow_unicode=True)


def main(argv: Optional[list[str]] = None) -> int:
    """Write the dashboard and the rule file into the chart."""
    ap = argparse.ArgumentParser(prog="python -m finetune_monitoring.dashboard", description=__doc__.splitlines()[0])
    ap.add_argument("--chart", type=Path, default=CHART, help="chart directory (default: the repo's)")
    args = ap.parse_args(argv)
    for path, text in ((args.chart / "dashboards" / DASHBOARD_FILE.name, render_dashboard()),
                       (args.chart / "rules" / RULES_FILE.name, render_rules())):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
