"""Job metrics: what the runner observes (jobs ended by status, duration, x-realtime, webhook
deliveries) in whichever process runs jobs, and the queue as the records say, read at scrape
time by the service."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.jobs.records import FINISHED, JobStatus

JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
REALTIME_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
WEBHOOK_OUTCOMES = ("delivered", "failed")


class JobMetrics:
    """Counters and histograms of the process that runs jobs."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.ended = Counter("amanuensis_jobs_finished", "jobs that ended, by final status",
                             ["status"], registry=registry)
        self.duration = Histogram("amanuensis_job_duration_seconds",
                                  "time from a job's start to its end (its last attempt)",
                                  buckets=JOB_DURATION_BUCKETS, registry=registry)
        self.realtime_factor = Histogram("amanuensis_job_realtime_factor",
                                         "audio seconds per processing second, per job",
                                         buckets=REALTIME_BUCKETS, registry=registry)
        self.webhooks = Counter("amanuensis_job_webhooks", "webhook deliveries by outcome",
                                ["outcome"], registry=registry)
        self.webhook_attempts = Counter("amanuensis_job_webhook_attempts",
                                        "webhook POSTs tried, successful or not",
                                        registry=registry)
        self.redispatches = Counter("amanuensis_job_redispatches",
                                    "jobs sent to the broker again, their message presumed lost "
                                    "(AMANUENSIS_JOB_REDISPATCH_SECONDS)", registry=registry)
        for status in FINISHED:  # every series exists from start-up, at 0, so rates have data
            self.ended.labels(status=status)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome=outcome)


class QueueCollector(Collector):
    """``amanuensis_jobs{status}`` and ``amanuensis_job_queue_depth`` from the records."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        counts = self._counts()
        jobs = GaugeMetricFamily("amanuensis_jobs", "job records by status", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], float(counts.get(status.value, 0)))
        yield jobs
        yield GaugeMetricFamily("amanuensis_job_queue_depth", "jobs waiting to start",
                                value=float(counts.get(JobStatus.QUEUED.value, 0)))
