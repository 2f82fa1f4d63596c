"""Admission control, sequenced with events: blocked work holds slots until the test lets it go.

No test asserts a duration. Short deadlines are used only where the work is blocked on an event
that is never set before the deadline, or outlasts what is left of it by a wide margin, so the
outcome does not depend on machine speed.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from app.admission import (
    AdmissionController,
    AdmissionLimits,
    AdmissionMetrics,
    ClientDisconnected,
    DeadlineExceeded,
    QueueFull,
)
from app.errors import WorkStopped, install_error_handlers

LONG_AUDIO = 1000.0  # with 1 s per audio second, a deadline no test reaches


class BlockedJob:
    """Work that signals when it starts and returns only when the test releases it."""

    def __init__(self, result: object = None, error: BaseException | None = None) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.thread_id: int | None = None
        self.result = result
        self.error = error

    def __call__(self) -> object:
        self.thread_id = threading.get_ident()
        self.started.set()
        if not self.release.wait(timeout=30):
            raise RuntimeError("test never released the job")
        if self.error is not None:
            raise self.error
        return self.result


async def wait_until(predicate, what: str) -> None:
    """Yield to the loop until ``predicate()`` holds; fail (not hang) if it never does."""
    for _ in range(3000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


def make_controller(concurrent=2, queue=2, base=60.0, per_second=1.0, poll=0.01):
    registry = CollectorRegistry()
    limits = AdmissionLimits(
        max_concurrent=concurrent,
        max_queue=queue,
        timeout_base_seconds=base,
        timeout_per_audio_second=per_second,
    )
    controller = AdmissionController(
        limits, AdmissionMetrics(registry), disconnect_poll_seconds=poll
    )
    return controller, registry


def rejected(registry: CollectorRegistry, reason: str) -> float:
    return registry.get_sample_value("amanuensis_rejected_requests_total", {"reason": reason})


def depth(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("amanuensis_queue_depth")


def run_scenario(scenario):
    async def main():
        controller, registry = make_controller(**scenario.limits)
        try:
            await scenario(controller, registry)
        finally:
            await asyncio.to_thread(controller.close)

    asyncio.run(main())


def scenario(**limits):
    def mark(fn):
        fn.limits = limits
        return fn

    return mark


def test_work_runs_on_a_pool_thread_while_the_loop_stays_free():
    @scenario(concurrent=2, queue=0)
    async def check(controller, registry):
        jobs = [BlockedJob(result=i) for i in range(2)]
        tasks = [asyncio.create_task(controller.run(j, audio_seconds=LONG_AUDIO)) for j in jobs]
        await wait_until(lambda: all(j.started.is_set() for j in jobs), "both jobs started")
        # Both slots are busy and the work is blocked: the loop still runs other coroutines.
        ticks = 0
        for _ in range(10):
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 10
        assert controller.running == 2
        assert all(j.thread_id != threading.get_ident() for j in jobs)
        for job in jobs:
            job.release.set()
        assert await asyncio.gather(*tasks) == [0, 1]
        assert controller.running == 0

    run_scenario(check)


def test_waiters_start_in_arrival_order_as_slots_free():
    @scenario(concurrent=1, queue=3)
    async def check(controller, registry):
        started_order: list[int] = []
        jobs = [BlockedJob(result=i) for i in range(4)]

        def tracked(i):
            def work():
                started_order.append(i)
                return jobs[i]()

            return work

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(controller.run(tracked(i), audio_seconds=LONG_AUDIO)))
            await wait_until(
                lambda i=i: controller.running + controller.waiting == i + 1, "admitted"
            )
        assert controller.waiting == 3
        assert depth(registry) == 3
        for i in range(4):
            await wait_until(jobs[i].started.is_set, f"job {i} started")
            assert started_order == list(range(i + 1))
            assert depth(registry) == 3 - i
            jobs[i].release.set()
            assert await tasks[i] == i
        assert controller.running == 0 and controller.waiting == 0

    run_scenario(check)


def test_a_full_queue_refuses_with_429_and_retry_after():
    @scenario(concurrent=1, queue=1)
    async def check(controller, registry):
        running, queued = BlockedJob("a"), BlockedJob("b")
        t1 = asyncio.create_task(controller.run(running, audio_seconds=LONG_AUDIO))
        await wait_until(running.started.is_set, "first job running")
        t2 = asyncio.create_task(controller.run(queued, audio_seconds=LONG_AUDIO))
        await wait_until(lambda: controller.waiting == 1, "second job queued")

        never = BlockedJob()
        with pytest.raises(QueueFull) as refused:
            await controller.run(never, audio_seconds=1.0)
        assert refused.value.status_code == 429
        assert refused.value.headers["Retry-After"] == "1"  # no run has finished yet
        assert "busy" in refused.value.message
        assert not never.started.is_set()
        assert rejected(registry, "queue_full") == 1
        assert rejected(registry, "deadline_exceeded") == 0

        running.release.set()
        queued.release.set()
        assert await asyncio.gather(t1, t2) == ["a", "b"]
        # Capacity is back: the same request is admitted now.
        again = BlockedJob("c")
        again.release.set()
        assert await controller.run(again, audio_seconds=1.0) == "c"

    run_scenario(check)


def test_a_request_past_its_deadline_in_the_queue_gets_504_and_never_starts():
    @scenario(concurrent=1, queue=2, base=0.05, per_second=1.0)
    async def check(controller, registry):
        blocker = BlockedJob("blocker")
        t1 = asyncio.create_task(controller.run(blocker, audio_seconds=LONG_AUDIO))
        await wait_until(blocker.started.is_set, "blocker running")

        victim = BlockedJob()
        with pytest.raises(DeadlineExceeded) as timed_out:
            await controller.run(victim, audio_seconds=0.0)
        assert timed_out.value.status_code == 504
        assert timed_out.value.code == "deadline_exceeded"
        assert "without starting" in timed_out.value.message
        assert controller.waiting == 0 and depth(registry) == 0
        assert rejected(registry, "deadline_exceeded") == 1

        blocker.release.set()
        assert await t1 == "blocker"
        assert not victim.started.is_set()
        assert controller.running == 0

    run_scenario(check)


def test_a_run_past_its_deadline_gets_504_but_keeps_its_slot_until_it_ends():
    @scenario(concurrent=1, queue=1, base=0.05, per_second=1.0)
    async def check(controller, registry):
        slow = BlockedJob("late result")
        with pytest.raises(DeadlineExceeded) as timed_out:
            await controller.run(slow, audio_seconds=0.0)
        assert "did not finish" in timed_out.value.message
        assert slow.started.is_set()
        # The thread is still busy: the slot stays taken, so the next request queues.
        assert controller.running == 1
        nxt = BlockedJob("next")
        t2 = asyncio.create_task(controller.run(nxt, audio_seconds=LONG_AUDIO))
        await wait_until(lambda: controller.waiting == 1, "next request queued")
        assert not nxt.started.is_set()

        slow.release.set()
        await wait_until(nxt.started.is_set, "next request started after the slow run ended")
        nxt.release.set()
        assert await t2 == "next"
        assert controller.running == 0
        assert rejected(registry, "deadline_exceeded") == 1

    run_scenario(check)


def test_the_deadline_scales_with_audio_duration():
    limits = AdmissionLimits(
        max_concurrent=1, max_queue=0, timeout_base_seconds=30, timeout_per_audio_second=0.5
    )
    assert limits.deadline_seconds(0) == 30
    assert limits.deadline_seconds(600) == 330
    assert limits.deadline_seconds(-5) == 30


@pytest.mark.parametrize(
    ("concurrent", "queue", "base", "per_second"),
    [(0, 1, 1, 1), (1, -1, 1, 1), (1, 1, 0, 1), (1, 1, 1, -1)],
)
def test_impossible_limits_are_refused(concurrent, queue, base, per_second):
    with pytest.raises(ValueError):
        AdmissionLimits(
            max_concurrent=concurrent,
            max_queue=queue,
            timeout_base_seconds=base,
            timeout_per_audio_second=per_second,
        )


def test_a_client_that_disconnects_while_queued_never_starts():
    @scenario(concurrent=1, queue=2)
    async def check(controller, registry):
        blocker = BlockedJob("blocker")
        t1 = asyncio.create_task(controller.run(blocker, audio_seconds=LONG_AUDIO))
        await wait_until(blocker.started.is_set, "blocker running")

        gone = asyncio.Event()

        async def is_disconnected() -> bool:
            return gone.is_set()

        leaver, stayer = BlockedJob(), BlockedJob("stayer")
        t2 = asyncio.create_task(
            controller.run(leaver, audio_seconds=LONG_AUDIO, is_disconnected=is_disconnected)
        )
        t3 = asyncio.create_task(controller.run(stayer, audio_seconds=LONG_AUDIO))
        await wait_until(lambda: controller.waiting == 2, "both queued")
        gone.set()
        with pytest.raises(ClientDisconnected):
            await t2
        assert controller.waiting == 1
        assert rejected(registry, "client_disconnected") == 1

        blocker.release.set()
        await wait_until(stayer.started.is_set, "the request behind the leaver started")
        stayer.release.set()
        assert await asyncio.gather(t1, t3) == ["blocker", "stayer"]
        assert not leaver.started.is_set()

    run_scenario(check)


def test_a_client_gone_when_its_slot_arrives_passes_the_slot_on():
    @scenario(concurrent=1, queue=2, poll=60.0)
    async def check(controller, registry):
        blocker = BlockedJob("blocker")
        t1 = asyncio.create_task(controller.run(blocker, audio_seconds=LONG_AUDIO))
        await wait_until(blocker.started.is_set, "blocker running")

        # The probe answers "gone" only once asked after the grant (poll is long: no asking
        # before the slot frees).
        async def is_disconnected() -> bool:
            return True

        leaver, stayer = BlockedJob(), BlockedJob("stayer")
        t2 = asyncio.create_task(
            controller.run(leaver, audio_seconds=LONG_AUDIO, is_disconnected=is_disconnected)
        )
        t3 = asyncio.create_task(controller.run(stayer, audio_seconds=LONG_AUDIO))
        await wait_until(lambda: controller.waiting == 2, "both queued")
        blocker.release.set()
        with pytest.raises(ClientDisconnected):
            await t2
        await wait_until(stayer.started.is_set, "the slot went to the next waiter")
        stayer.release.set()
        assert await asyncio.gather(t1, t3) == ["blocker", "stayer"]
        assert not leaver.started.is_set()
        assert controller.running == 0

    run_scenario(check)


def test_a_request_cancelled_while_running_frees_its_slot_when_the_run_ends():
    @scenario(concurrent=1, queue=1)
    async def check(controller, registry):
        job = BlockedJob("orphan")
        t1 = asyncio.create_task(controller.run(job, audio_seconds=LONG_AUDIO))
        await wait_until(job.started.is_set, "job running")
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert controller.running == 1  # the thread still works
        job.release.set()
        await wait_until(lambda: controller.running == 0, "slot freed when the run ended")

    run_scenario(check)


def test_a_request_cancelled_while_queued_leaves_the_queue():
    @scenario(concurrent=1, queue=1)
    async def check(controller, registry):
        blocker = BlockedJob("blocker")
        t1 = asyncio.create_task(controller.run(blocker, audio_seconds=LONG_AUDIO))
        await wait_until(blocker.started.is_set, "blocker running")
        queued = BlockedJob()
        t2 = asyncio.create_task(controller.run(queued, audio_seconds=LONG_AUDIO))
        await wait_until(lambda: controller.waiting == 1, "queued")
        t2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t2
        assert controller.waiting == 0 and depth(registry) == 0
        blocker.release.set()
        assert await t1 == "blocker"
        assert controller.running == 0
        assert not queued.started.is_set()

    run_scenario(check)


def test_an_error_inside_the_work_reaches_the_caller_and_frees_the_slot():
    @scenario(concurrent=1, queue=0)
    async def check(controller, registry):
        failing = BlockedJob(error=ValueError("model exploded"))
        failing.release.set()
        with pytest.raises(ValueError, match="model exploded"):
            await controller.run(failing, audio_seconds=1.0)
        assert controller.running == 0
        ok = BlockedJob("fine")
        ok.release.set()
        assert await controller.run(ok, audio_seconds=1.0) == "fine"

    run_scenario(check)


def test_no_more_threads_work_than_slots_under_a_burst():
    @scenario(concurrent=3, queue=50)
    async def check(controller, registry):
        lock = threading.Lock()
        active = 0
        peak = 0
        gate = threading.Event()

        def work():
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            gate.wait(timeout=30)
            with lock:
                active -= 1
            return True

        tasks = [
            asyncio.create_task(controller.run(work, audio_seconds=LONG_AUDIO)) for _ in range(40)
        ]
        await wait_until(lambda: controller.running == 3 and controller.waiting == 37, "burst in")
        gate.set()
        assert all(await asyncio.gather(*tasks))
        assert peak == 3
        assert controller.running == 0 and depth(registry) == 0

    run_scenario(check)


def slot_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("amanuensis-slot")}


def test_close_leaves_no_model_threads():
    """None of the threads this controller started outlives its close (other controllers -
    a session's in-process servers - may hold their own)."""
    before = slot_threads()

    async def main():
        controller, _ = make_controller(concurrent=2, queue=0)
        job = BlockedJob("x")
        job.release.set()
        assert await controller.run(job, audio_seconds=1.0) == "x"
        await asyncio.to_thread(controller.close)

    asyncio.run(main())
    assert not slot_threads() - before


def test_refusals_answer_in_the_api_error_shape():
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/busy")
    async def busy():
        raise QueueFull("The server is busy.", headers={"Retry-After": "3"})

    @app.get("/late")
    async def late():
        raise DeadlineExceeded("Too slow.")

    with TestClient(app) as client:
        busy_response = client.get("/busy")
        assert busy_response.status_code == 429
        assert busy_response.headers["retry-after"] == "3"
        assert busy_response.json() == {
            "error": {
                "message": "The server is busy.",
                "type": "rate_limit_error",
                "param": None,
                "code": "queue_full",
            }
        }
        late_response = client.get("/late")
        assert late_response.status_code == 504
        assert late_response.json()["error"]["type"] == "timeout_error"
        assert late_response.json()["error"]["message"] == "Too slow."


def test_a_slot_learns_its_audio_duration_late_and_extends_its_deadline():
    @scenario(concurrent=1, queue=0, base=0.05, per_second=1.0)
    async def check(controller, registry):
        async with controller.admit() as slot:
            assert await slot.run(lambda: 1000.0) == 1000.0  # "decode": the duration
            slot.allow_for_audio(1000.0)
            assert slot.deadline_seconds == pytest.approx(1000.05)
            job = BlockedJob("transcript")
            task = asyncio.create_task(slot.run(job))
            await wait_until(job.started.is_set, "transcription running")
            await asyncio.sleep(0.2)  # well past the base allowance alone
            job.release.set()
            assert await task == "transcript"
        assert controller.running == 0
        assert rejected(registry, "deadline_exceeded") == 0

    run_scenario(check)


def test_a_slot_runs_one_call_at_a_time_and_not_after_it_is_given_back():
    @scenario(concurrent=1, queue=0)
    async def check(controller, registry):
        job = BlockedJob("first")
        async with controller.admit(audio_seconds=LONG_AUDIO) as slot:
            first = asyncio.create_task(slot.run(job))
            await wait_until(job.started.is_set, "first run started")
            with pytest.raises(RuntimeError, match="not finished"):
                await slot.run(lambda: "second")
            job.release.set()
            assert await first == "first"
        with pytest.raises(RuntimeError, match="given back"):
            await slot.run(lambda: "late")
        assert controller.running == 0

    run_scenario(check)


def test_the_deadline_counts_from_arrival_so_queue_wait_uses_it_up():
    @scenario(concurrent=1, queue=1, base=1.0, per_second=0.0)
    async def check(controller, registry):
        holder = BlockedJob()
        first = asyncio.create_task(controller.run(holder, audio_seconds=0.0))
        await wait_until(holder.started.is_set, "the first request holds the slot")
        second = asyncio.create_task(controller.run(lambda: time.sleep(0.5) or "done",
                                                    audio_seconds=0.0))
        await wait_until(lambda: controller.waiting == 1, "the second request queued")
        await asyncio.sleep(0.7)  # the second has used 0.7 s of its 1 s waiting
        holder.release.set()
        await first
        # 0.5 s of work would fit in a fresh 1 s deadline, not in the 0.3 s left of it.
        with pytest.raises(DeadlineExceeded, match="queueing included"):
            await second
        assert rejected(registry, "deadline_exceeded") == 1

    run_scenario(check)


def cooperative_job(slot, started: threading.Event):
    """Work in steps that checks ``slot.should_stop()`` between them, as the engine does."""

    def work():
        started.set()
        for _ in range(6000):
            if slot.should_stop():
                raise WorkStopped("stopped")
            time.sleep(0.005)
        raise RuntimeError("never asked to stop")

    return work


def test_work_past_its_deadline_is_asked_to_stop_and_frees_its_slot():
    @scenario(concurrent=1, queue=0, base=0.2, per_second=0.0)
    async def check(controller, registry):
        started = threading.Event()
        with pytest.raises(DeadlineExceeded):
            async with controller.admit() as slot:
                assert not slot.should_stop()
                await slot.run(cooperative_job(slot, started))
        assert started.is_set() and slot.should_stop()
        await wait_until(lambda: controller.running == 0, "the stopped work gave its slot back")
        assert await controller.run(lambda: "next", audio_seconds=LONG_AUDIO) == "next"

    run_scenario(check)


def test_work_whose_client_leaves_while_it_runs_is_stopped_and_frees_its_slot():
    @scenario(concurrent=1, queue=0)
    async def check(controller, registry):
        started = threading.Event()

        async def gone() -> bool:
            return started.is_set()

        with pytest.raises(ClientDisconnected, match="while its transcription ran"):
            async with controller.admit(audio_seconds=LONG_AUDIO, is_disconnected=gone) as slot:
                await slot.run(cooperative_job(slot, started))
        await wait_until(lambda: controller.running == 0, "the stopped work gave its slot back")
        assert rejected(registry, "client_disconnected") == 1
        assert rejected(registry, "deadline_exceeded") == 0

    run_scenario(check)


def test_work_that_stops_itself_at_the_deadline_is_a_504_not_an_error():
    @scenario(concurrent=1, queue=0, base=0.3, per_second=0.0, poll=30.0)
    async def check(controller, registry):
        async with controller.admit() as slot:
            def stops_at_the_deadline():
                while not slot.should_stop():
                    time.sleep(0.005)
                raise WorkStopped("stopped")

            with pytest.raises(DeadlineExceeded):
                await slot.run(stops_at_the_deadline)

    run_scenario(check)


class ThreadHolder:
    """A thread of its own taking a slot through :class:`ThreadSlots`, as a job does: it records
    whether it got one and holds it until the test releases it."""

    def __init__(self, controller: AdmissionController) -> None:
        self.slots = controller.thread_slots()
        self.stop = threading.Event()
        self.release = threading.Event()
        self.held: bool | None = None
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        with self.slots.hold(self.stop) as held:
            self.held = held
            if held and not self.release.wait(timeout=30):
                raise RuntimeError("test never released the slot")

    def ended(self) -> bool:
        return not self.thread.is_alive()


def test_a_thread_holds_a_slot_and_waits_behind_queued_requests():
    @scenario(concurrent=1, queue=1)
    async def check(controller, registry):
        first = ThreadHolder(controller)
        await wait_until(lambda: first.held is True, "the first thread holds the slot")
        assert controller.running == 1
        request = BlockedJob("r")
        task = asyncio.create_task(controller.run(request, audio_seconds=LONG_AUDIO))
        await wait_until(lambda: controller.waiting == 1, "the request queued")
        second = ThreadHolder(controller)
        await asyncio.sleep(0.05)
        assert second.held is None and controller.waiting == 1  # threads are not in max_queue
        first.release.set()
        await wait_until(request.started.is_set, "the request got the slot first")
        assert second.held is None
        request.release.set()
        assert await task == "r"
        await wait_until(lambda: second.held is True, "then the waiting thread")
        second.release.set()
        await wait_until(lambda: second.ended() and controller.running == 0, "all given back")

    run_scenario(check)


def test_a_thread_told_to_stop_while_waiting_gives_up_and_leaves_no_slot_taken():
    @scenario(concurrent=1, queue=0)
    async def check(controller, registry):
        request = BlockedJob("r")
        task = asyncio.create_task(controller.run(request, audio_seconds=LONG_AUDIO))
        await wait_until(request.started.is_set, "the request runs")
        waiting = ThreadHolder(controller)
        await asyncio.sleep(0.05)
        waiting.stop.set()
        await wait_until(waiting.ended, "the thread gave up")
        assert waiting.held is False
        request.release.set()
        assert await task == "r"
        await wait_until(lambda: controller.running == 0, "the slot is free, not handed to it")
        late = ThreadHolder(controller)
        await wait_until(lambda: late.held is True, "a later thread gets the slot")
        late.release.set()
        await wait_until(lambda: late.ended() and controller.running == 0, "given back")

    run_scenario(check)
