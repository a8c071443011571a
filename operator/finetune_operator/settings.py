"""The operator's tunables, read once from the environment (the Helm chart sets them; tests shorten them).

Why environment variables: kopf's settings are set in a startup handler, which overrides whatever a test
runner passes; reading them from the environment keeps one path for production and tests.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import kopf

from .names import JOB_NAME_LABEL

# The only events the operator watches: the Job controller's "cannot create the pods" (indexes.py).
FAILED_CREATE_SELECTOR = "involvedObject.kind=Job,reason=FailedCreate"


@dataclass(frozen=True)
class OperatorConfig:
    """Values of the FINETUNE_* variables (defaults are production settings)."""

    resync_seconds: float = 30.0  # FINETUNE_RESYNC_SECONDS: per-job timer: progress scrape + level-triggered resync
    metrics_port: int = 8080  # FINETUNE_OPERATOR_METRICS_PORT: /metrics (0: off)
    watch_timeout: int = 300  # FINETUNE_WATCH_TIMEOUT: server-side watch timeout (reconnects after)
    handler_backoff: float = 10.0  # FINETUNE_HANDLER_BACKOFF: retry delay of failed create handlers
    progress_timeout: float = 1.0  # FINETUNE_PROGRESS_TIMEOUT: GET of the trainer's metrics
    max_workers: int = 16  # FINETUNE_MAX_WORKERS: threads running reconciles (the kubernetes client blocks)
    max_scrapes: int = 32  # FINETUNE_MAX_SCRAPES: trainer metrics endpoints read at once


def from_env(env: dict[str, str] | None = None) -> OperatorConfig:
    """The config from `env` (default: os.environ); unset or empty variables keep the defaults.

    Raises:
        ValueError: a variable is not a number.
    """
    env = os.environ if env is None else env
    names = {"resync_seconds": ("FINETUNE_RESYNC_SECONDS", float),
             "metrics_port": ("FINETUNE_OPERATOR_METRICS_PORT", int),
             "watch_timeout": ("FINETUNE_WATCH_TIMEOUT", int),
             "handler_backoff": ("FINETUNE_HANDLER_BACKOFF", float),
             "progress_timeout": ("FINETUNE_PROGRESS_TIMEOUT", float),
             "max_workers": ("FINETUNE_MAX_WORKERS", int),
             "max_scrapes": ("FINETUNE_MAX_SCRAPES", int)}
    values = {}
    for field, (var, cast) in names.items():
        if env.get(var):
            try:
                values[field] = cast(env[var])
            except ValueError:
                raise ValueError(f"{var}={env[var]!r} is not a number") from None
    return OperatorConfig(**values)


def apply(conf: OperatorConfig, settings: kopf.OperatorSettings) -> None:
    """Set kopf's settings: annotations for its bookkeeping (the CRD's status schema prunes `status.kopf`),
    Events only for kopf's warnings (ours are posted by the reconciler), the timeouts above, and the server-side
    selectors of the watches: only the operator's children (by label) and FailedCreate events of Jobs (by field)
    are sent to it, never the cluster's other pods, Jobs or events."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="finetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="finetune.io", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "finetune-operator"
    settings.watching.server_timeout = conf.watch_timeout
    settings.watching.client_timeout = conf.watch_timeout + 10
    settings.execution.default_backoff = conf.handler_backoff
    settings.execution.max_workers = conf.max_workers
    for plural in ("jobs", "pods", "configmaps", "services", "serviceaccounts", "persistentvolumeclaims"):
        settings.watching.label_selectors[plural] = JOB_NAME_LABEL
    settings.watching.field_selectors["events"] = FAILED_CREATE_SELECTOR
