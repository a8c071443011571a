"""The kopf handlers: thin, and all of them end in one level-triggered reconcile per FineTuneJob.

Why so little here: kopf decides *when* - a FineTuneJob appeared, changed (only `spec.suspend` may) or was listed
again at an operator restart; a child, a trainer pod or a FailedCreate event changed - and the periodic resync
decides the rest; `reconcile.Reconciler` decides *what*, the same way every time, from kopf's indexes (indexes.py),
never from a GET or a LIST. The resync visits only unfinished jobs: a Succeeded or Failed job costs nothing after its
last write. No handler persists progress on the object and there is no finalizer (hence no kopf timer or daemon:
kopf gives every object that has one a finalizer): deletion cascades through owner references, so it works while the
operator is down. `kopf run -m finetune_operator.handlers` (or `finetune-operator`) loads this."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from typing import Any, Mapping, Optional

import kopf

from finetune_api.contract import METRICS_PORT
from finetune_api.job import GROUP, PLURAL, VERSION

from . import indexes as idx
from . import settings as operator_settings
from .cluster import Cluster
from .failure_policy import index_of
from .progress import fetch_progress, metrics_url
from .reconcile import Reconciler
from .reconcile_queue import ReconcileQueue
from .render import default_image
from .status import TERMINAL



def in_cluster_server(env: Mapping[str, str]) -> Optional[str]:
    """The API server's address that the kubelet gives every pod ($KUBERNETES_SERVICE_HOST/PORT), or None."""
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return None
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


@kopf.on.login()
def on_login_credentials(**kwargs) -> Optional[kopf.ConnectionInfo]:
    """In-cluster ServiceAccount, else $KUBECONFIG as it is now (the client library froze it at import).

    In a pod, the API server is reached where the kubelet says ($KUBERNETES_SERVICE_HOST/PORT), as client-go's
    in-cluster config and cluster.py's client do: kopf's own ServiceAccount login assumes
    `https://kubernetes.default.svc` (port 443, through cluster DNS), which a pod on the host's network, or a
    cluster whose DNS is down, cannot resolve; then the operator's watches and its writes would take different
    ways to the same server.
    """
    info = kopf.login_with_service_account(**kwargs)
    if info is not None:
        server = in_cluster_server(os.environ)
        return dataclasses.replace(info, server=server) if server else info
    return kopf.login_with_kubeconfig(**kwargs)


class _Operator:
    """What the handlers share (kept in kopf's memo): the reconciler, its queue, the indexes, the last progress."""

    def __init__(self, conf: operator_settings.OperatorConfig):
        self.reconciler = Reconciler(Cluster(), default_image())
        self.indexes: dict[str, Any] = {}
        self.progress: dict[tuple[str, str], Any] = {}
        self.queue = ReconcileQueue(self.reconciler.reconcile, self._snapshot, workers=conf.max_workers)
        self.scrapes = asyncio.Semaphore(conf.max_scrapes)
        self.conf = conf

    def see(self, kwargs: dict) -> None:
        """Keep kopf's index objects (the same objects on every call) for snapshots taken later."""
        if not self.indexes:
            self.indexes = {k: v for k, v in kwargs.items() if k.endswith("_index")}

    def _snapshot(self, key: tuple[str, str]):
        return idx.snapshot(self.indexes, key, self.progress.get(key))

    def forget(self, key: tuple[str, str]) -> None:
        self.progress.pop(key, None)
        self.reconciler.forget(key)


@kopf.on.startup()
async def on_startup_configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_) -> None:
    """Apply the settings from the environment and start the metrics endpoint."""
    conf = operator_settings.from_env()
    operator_settings.apply(conf, settings)
    memo.op = _Operator(conf)
    memo.op.reconciler.metrics.serve(conf.metrics_port)
    memo.op.resync = asyncio.get_running_loop().create_task(resync_forever(memo.op, conf.resync_seconds))
    logger.info("finetune-operator: trainer image %s, resync every %ss, metrics on :%s",
                memo.op.reconciler.image, conf.resync_seconds, conf.metrics_port)


@kopf.on.cleanup()
def on_cleanup_stop(memo: kopf.Memo, **_) -> None:
    """Stop the resync and the reconciles."""
    if getattr(memo, "op", None) is not None:
        memo.op.resync.cancel()
        memo.op.queue.close()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_event_finetunejob(type: str, namespace: str, name: str, memo: kopf.Memo, **kwargs) -> None:
    """Created, changed (`spec.suspend`), listed at startup, or deleted."""
    memo.op.see(kwargs)
    if type == "DELETED":
        memo.op.forget((namespace, name))
    else:
        await memo.op.queue.request((namespace, name))


async def _child_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, kwargs: dict) -> None:
    memo.op.see(kwargs)
    await memo.op.queue.request((namespace, labels[idx.names.JOB_NAME_LABEL]))


@kopf.on.event("batch", "v1", "jobs", labels=idx.LABELS)
async def on_event_job(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **kwargs) -> None:
    """The trainer Job started, was suspended, completed, failed - or was deleted (it is created again)."""
    await _child_changed(namespace, labels, memo, kwargs)


@kopf.on.event("v1", "pods", labels=idx.LABELS)
async def on_event_pod(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **kwargs) -> None:
    """A trainer pod was scheduled or not, started, waits (image, Secret), failed, finished or was deleted."""
    await _child_changed(namespace, labels, memo, kwargs)


for _plural in idx.CHILD_KINDS:
    async def _on_child(namespace: str, labels: kopf.Labels, memo: kopf.Memo, **kwargs) -> None:
        """A ConfigMap, Service, ServiceAccount or output claim changed or was deleted (it is created again)."""
        await _child_changed(namespace, labels, memo, kwargs)

    kopf.on.event("v1", _plural, labels=idx.LABELS, id=f"on_event_{_plural}")(_on_child)


@kopf.on.event("v1", "events")
async def on_event_failed_create(namespace: str, body: kopf.Body, memo: kopf.Memo, **kwargs) -> None:
    """The Job controller could not create a trainer pod (no PriorityClass, no quota, refused by Pod Security)."""
    memo.op.see(kwargs)
    job = (body.get("involvedObject") or {}).get("name")
    owner = idx.owner_of_job(memo.op.indexes, namespace, job) if job else None
    if owner:
        await memo.op.queue.request((namespace, owner))


async def resync_forever(op: _Operator, every: float) -> None:
    """Every `every` seconds, every unfinished job: read rank 0's progress (at most `max_scrapes` at once), then
    reconcile - the level-triggered safety net that also recreates a child whose deletion a watch missed.

    One task of the operator, not a kopf timer per object: kopf puts a finalizer on every object that has a timer
    or a daemon, and then a FineTuneJob could not be deleted while no operator runs. The jobs come from the index
    (no LIST); a finished job is skipped, so it costs nothing after its last write.
    """
    while True:
        await asyncio.sleep(every)
        keys = [key for key, store in list((op.indexes.get("ftj_index") or {}).items())
                if any((f.get("status") or {}).get("phase") not in TERMINAL for f in store)]
        await asyncio.gather(*(_resync(op, key) for key in keys), return_exceptions=True)


async def _resync(op: _Operator, key: tuple[str, str]) -> None:
    ftj = next(iter(idx.values(op.indexes.get("ftj_index"), key)), None)
    if ftj is not None and (ftj.get("status") or {}).get("phase") == "Running":
        pods = [p for p in idx.values(op.indexes.get("pod_index"), key)
                if index_of(p) == "0" and (p.get("status") or {}).get("phase") == "Running"]
        url = metrics_url(pods[0], METRICS_PORT) if pods else None
        if url:
            async with op.scrapes:
                op.progress[key] = await asyncio.to_thread(fetch_progress, url, op.conf.progress_timeout)
    await op.queue.request(key)
