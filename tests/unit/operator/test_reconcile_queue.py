"""reconcile_queue: one reconcile at a time per job, coalesced, and nothing kept once it is done."""

from __future__ import annotations

import asyncio
import threading

from finetune_operator.reconcile_queue import ReconcileQueue

KEY = ("team-a", "demo")


def test_a_slow_reconcile_of_an_older_picture_never_overwrites_a_newer_one():
    """The per-job lock: reconcile A reads "Pending" and is slow to write; meanwhile the pod runs and B is asked
    for. B must not run beside A (it would write "Running" first and A's "Pending" would win); it runs after A."""
    world = {"now": "Pending"}
    written: list[str] = []
    a_started, b_ran = threading.Event(), threading.Event()

    def reconcile(picture: str) -> None:
        if picture == "Pending":
            a_started.set()
            b_ran.wait(timeout=0.5)  # serialised, B cannot run now: this times out and A writes first
        else:
            b_ran.set()
        written.append(picture)

    queue = ReconcileQueue(reconcile, lambda key: world["now"], workers=4)

    async def main():
        a = asyncio.create_task(queue.request(KEY))
        assert await asyncio.to_thread(a_started.wait, 5)
        world["now"] = "Running"
        await queue.request(KEY)
        await a

    asyncio.run(main())
    assert written[-1] == "Running", written  # what the user sees last is the newest picture
    assert queue.in_flight == 0


def test_a_burst_of_requests_costs_two_reconciles_and_leaves_nothing_behind():
    calls: list[str] = []
    gate = threading.Event()

    def reconcile(picture: str) -> None:
        calls.append(picture)
        gate.wait(timeout=5)

    queue = ReconcileQueue(reconcile, lambda key: "w", workers=4)

    async def main():
        first = asyncio.create_task(queue.request(KEY))
        while not calls:
            await asyncio.sleep(0.01)
        await asyncio.gather(*(queue.request(KEY) for _ in range(10)))  # each returns at once: marked dirty
        gate.set()
        await first

    asyncio.run(main())
    assert len(calls) == 2
    assert queue.in_flight == 0  # the per-job state is pruned: nothing grows with the jobs ever seen


def test_a_deleted_job_is_not_reconciled_and_a_failing_one_is_logged_not_raised():
    seen: list[str] = []

    def reconcile(picture: str) -> None:
        seen.append(picture)
        raise RuntimeError("API down")

    queue = ReconcileQueue(reconcile, lambda key: None if key[1] == "gone" else "w", workers=2)
    asyncio.run(queue.request(("team-a", "gone")))
    asyncio.run(queue.request(KEY))
    assert seen == ["w"] and queue.failures == 1 and queue.in_flight == 0
