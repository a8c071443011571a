"""The kopf handlers: thin, idempotent entry points into the reconciler.

Why so little here: kopf decides *when* (a FineTuneJob appeared, the operator restarted, `spec.suspend`
changed, a child Job or pod changed); `reconcile.Reconciler` decides *what*, the same way every time.
`kopf run -m finetune_operator.handlers` (or the `finetune-operator` console script) loads this module.
Only `spec.suspend` may change after creation - the CRD's CEL rules refuse every other edit - so there is
no general update handler. Deletion needs no handler and no finalizer: owner references cascade.
"""

from __future__ import annotations

import threading

import kopf
from kubernetes.client import ApiException

from finetune_api.job import GROUP, PLURAL, VERSION
from finetune_api.loading import SpecError

from . import settings as operator_settings
from .cluster import ChildConflict, Cluster
from .names import JOB_NAME_LABEL
from .reconcile import Reconciler
from .render import default_image


@kopf.on.login()
def on_login_credentials(**kwargs) -> kopf.ConnectionInfo | None:
    """In-cluster ServiceAccount, else $KUBECONFIG as it is now (the client library froze it at import)."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def on_startup_configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_) -> None:
    """Apply the settings from the environment, start the metrics endpoint and the periodic resync."""
    conf = operator_settings.from_env()
    operator_settings.apply(conf, settings)
    memo.reconciler = Reconciler(Cluster(), default_image(), fetch_timeout=conf.progress_timeout)
    memo.reconciler.metrics.serve(conf.metrics_port)
    memo.stop = threading.Event()
    memo.resync = threading.Thread(target=_resync_loop, args=(memo.reconciler, memo.stop, conf.resync_seconds, logger),
                                   name="finetune-resync", daemon=True)
    memo.resync.start()
    logger.info("finetune-operator: trainer image %s, resync every %ss, metrics on :%s",
                memo.reconciler.image, conf.resync_seconds, conf.metrics_port)


def _resync_loop(reconciler: Reconciler, stop: threading.Event, every: float, logger) -> None:
    while not stop.wait(every):
        try:
            reconciler.resync_all()
        except Exception:  # noqa: BLE001 - the loop must survive an API outage
            logger.exception("periodic resync failed")


@kopf.on.cleanup()
def on_cleanup_stop(memo: kopf.Memo, **_) -> None:
    """Stop the resync thread."""
    if getattr(memo, "stop", None) is not None:
        memo.stop.set()


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
def on_create_children(body: kopf.Body, memo: kopf.Memo, **_) -> None:
    """Create the ConfigMap, Service, ServiceAccount, [PVC] and Job if absent; then mirror their state."""
    try:
        memo.reconciler.ensure_children(dict(body))
    except SpecError as e:
        raise kopf.PermanentError(str(e)) from None
    except ChildConflict as e:
        raise kopf.TemporaryError(str(e), delay=30) from None
    except ApiException as e:
        raise kopf.TemporaryError(f"API error {e.status} {e.reason}", delay=5) from None


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.suspend")
def on_update_suspend(namespace: str, name: str, new, memo: kopf.Memo, **_) -> None:
    """`spec.suspend` true stops the pods (checkpoints stay on the volume); false resumes from the last one."""
    memo.reconciler.set_suspend(namespace, name, bool(new))


@kopf.on.event("batch", "v1", "jobs", labels={JOB_NAME_LABEL: kopf.PRESENT})
def on_event_job(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_) -> None:
    """A trainer Job changed (started, suspended, completed, failed): mirror it into its owner's status."""
    memo.reconciler.sync_status(namespace, labels[JOB_NAME_LABEL])


@kopf.on.event("v1", "pods", labels={JOB_NAME_LABEL: kopf.PRESENT})
def on_event_pod(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **_) -> None:
    """A trainer pod changed (scheduled or not, running, terminated): mirror it into its owner's status."""
    memo.reconciler.sync_status(namespace, labels[JOB_NAME_LABEL])
