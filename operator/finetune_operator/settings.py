"""The operator's tunables, read once from the environment (the Helm chart sets them; tests shorten them).

Why environment variables: kopf's settings are set in a startup handler, which overrides whatever a test
runner passes; reading them from the environment keeps one path for production and tests.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import kopf


@dataclass(frozen=True)
class OperatorConfig:
    """Values of the FINETUNE_* variables (defaults are production settings)."""

    resync_seconds: float = 30.0  # FINETUNE_RESYNC_SECONDS: periodic status + progress refresh
    metrics_port: int = 8080  # FINETUNE_OPERATOR_METRICS_PORT: /metrics (0: off)
    watch_timeout: int = 300  # FINETUNE_WATCH_TIMEOUT: server-side watch timeout (reconnects after)
    handler_backoff: float = 10.0  # FINETUNE_HANDLER_BACKOFF: retry delay of failed create handlers
    progress_timeout: float = 1.0  # FINETUNE_PROGRESS_TIMEOUT: GET of the trainer's metrics
    max_workers: int = 16  # FINETUNE_MAX_WORKERS: threads running the (synchronous) handlers


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
             "max_workers": ("FINETUNE_MAX_WORKERS", int)}
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
    Events only for kopf's warnings (ours are posted by the reconciler), and the timeouts above."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="finetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="finetune.io", key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "finetune-operator"
    settings.watching.server_timeout = conf.watch_timeout
    settings.watching.client_timeout = conf.watch_timeout + 10
    settings.execution.default_backoff = conf.handler_backoff
    settings.execution.max_workers = conf.max_workers
