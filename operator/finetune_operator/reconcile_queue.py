"""One reconcile at a time per FineTuneJob, coalescing the requests that arrive meanwhile.

Why: one job is woken by many watch streams (itself, its Job, its pods, its other children, the Job controller's
FailedCreate events) and a timer, concurrently. Two reconciles of the same job at once could write an older picture
of the world over a newer one (the first reads "pod Pending", the second "pod Running"; the first writes last). So
each job has at most one reconcile in flight; a request arriving meanwhile only marks the job dirty, and the running
reconcile goes round once more with a fresh snapshot: a burst of ten pod events costs two reconciles, not ten.
The per-job state exists only while a reconcile runs, so nothing here grows with the number of jobs ever seen.

The reconcile itself is synchronous (the kubernetes client blocks) and runs on a bounded thread pool; the snapshot
is taken on the event loop, where kopf's indexes live, right before the reconcile it feeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)
Key = tuple[str, str]


class ReconcileQueue:
    """Runs `reconcile(snapshot(key))` for requested keys: serialised per key, coalesced, on `workers` threads."""

    def __init__(self, reconcile: Callable[[Any], Any], snapshot: Callable[[Key], Optional[Any]], workers: int = 16):
        self._reconcile, self._snapshot = reconcile, snapshot
        self._dirty: dict[Key, bool] = {}  # present while a reconcile of the key is in flight
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reconcile")
        self.failures = 0

    @property
    def in_flight(self) -> int:
        """Jobs with a reconcile running now."""
        return len(self._dirty)

    async def request(self, key: Key) -> None:
        """Reconcile `key` now, or once more after the reconcile already running for it."""
        if key in self._dirty:
            self._dirty[key] = True
            return
        self._dirty[key] = True
        loop = asyncio.get_running_loop()
        try:
            while self._dirty.get(key):
                self._dirty[key] = False
                world = self._snapshot(key)
                if world is None:  # deleted: nothing to reconcile
                    break
                try:
                    await loop.run_in_executor(self._pool, self._reconcile, world)
                except Exception:  # noqa: BLE001 - logged; the next event or timer tick retries
                    self.failures += 1
                    log.exception("reconcile of FineTuneJob %s/%s failed", *key)
                    break
        finally:
            self._dirty.pop(key, None)

    def close(self) -> None:
        """Stop accepting work; running reconciles finish."""
        self._pool.shutdown(wait=False, cancel_futures=True)
