"""settings: the operator's tunables from the environment, applied to kopf."""

from __future__ import annotations

import kopf
import pytest

from finetune_operator.settings import OperatorConfig, apply, from_env


def test_defaults_and_overrides():
    assert from_env({}) == OperatorConfig()
    conf = from_env({"FINETUNE_RESYNC_SECONDS": "2", "FINETUNE_OPERATOR_METRICS_PORT": "0", "FINETUNE_WATCH_TIMEOUT": ""})
    assert conf.resync_seconds == 2 and conf.metrics_port == 0 and conf.watch_timeout == 300


def test_bad_value_names_the_variable():
    with pytest.raises(ValueError, match="FINETUNE_RESYNC_SECONDS"):
        from_env({"FINETUNE_RESYNC_SECONDS": "soon"})


def test_apply_keeps_kopf_bookkeeping_out_of_status():
    settings = kopf.OperatorSettings()
    apply(OperatorConfig(watch_timeout=5, handler_backoff=1), settings)
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert settings.watching.server_timeout == 5 and settings.execution.default_backoff == 1
