"""The embedded executor: with no broker, the service runs jobs itself on ``job_workers``
threads, oldest first, through the same :func:`~app.jobs.tasks.run_job` the Celery workers use.

Each job holds one of the service's admission slots while it runs (:class:`~app.admission.
ThreadSlots`), so jobs and synchronous, streaming and realtime transcriptions together never run
more than ``AMANUENSIS_MAX_CONCURRENT`` at once on the engine; a job waits, still ``queued``,
behind every request waiting for a slot.

At start it puts the jobs left ``running`` by the previous process back in the queue (it owns
the data directory alone), so a restart loses nothing: they run again from the beginning. At
shutdown the running job stops at its next chunk and stays ``running`` for the next start.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError

from app.admission import ThreadSlots
from app.jobs.tasks import JobContext, run_job

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0


class EmbeddedExecutor:
    def __init__(self, context: JobContext, workers: int, slots: ThreadSlots) -> None:
        self.context = context
        self._slots = slots
        self._wake = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"amanuensis-job-{index}",
                                          daemon=True) for index in range(workers)]

    def start(self) -> None:
        requeued = self.context.records.requeue_running()
        if requeued:
            logger.info("%d jobs left running by the previous process are queued again", requeued)
        for thread in self._threads:
            thread.start()

    def notify(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self.context.stopping.set()
        self._wake.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()

    def _work(self) -> None:
        while not self.context.stopping.is_set():
            if self._next() is None:
                self._wake.wait(POLL_SECONDS)
                self._wake.clear()
                continue
            with self._slots.hold(self.context.stopping) as held:
                # Looked up again in the slot: the wait may have been long.
                job_id = self._next() if held else None
                if job_id is not None:
                    run_job(job_id, self.context)

    def _next(self) -> str | None:
        if self.context.engine() is None:
            return None
        try:
            return self.context.records.next_claimable(stale_before=self.context.stale_before())
        except SQLAlchemyError as error:
            logger.warning("job records unavailable: %s", error)
            return None
