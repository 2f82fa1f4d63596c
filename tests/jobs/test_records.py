"""Job records on SQLite and on a real PostgreSQL: one claim per job, stale workers replaced,
late answers from a replaced attempt ignored, cancellation, pagination and retention."""

from __future__ import annotations

import time

import pytest

from app.jobs.records import JobRecords, JobStatus
from app.jobs.storage import AUDIO, DirectoryFiles
from app.jobs.tasks import sweep_expired


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def records(request, tmp_path):
    if request.param == "sqlite":
        store = JobRecords.from_url(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    else:
        store = JobRecords.from_url(request.getfixturevalue("postgres_url"))
        with store.engine.begin() as connection:
            connection.exec_driver_sql("DELETE FROM amanuensis_jobs")
    yield store
    store.close()


def _create(records: JobRecords) -> str:
    job_id = records.new_id()
    records.create(job_id, duration_seconds=60.0, options={}, filename="a.flac",
                   callback_url=None)
    return job_id


def test_a_job_is_claimed_once(records):
    job_id = _create(records)
    now = time.time()
    first = records.claim(job_id, stale_before=now - 60, worker="a:1")
    assert (first.status, first.attempts, first.worker) == ("running", 1, "a:1")
    assert records.claim(job_id, stale_before=now - 60, worker="b:2") is None
    assert records.next_claimable(stale_before=now - 60) is None


def test_a_stale_attempt_is_taken_over_and_its_late_answers_ignored(records):
    job_id = _create(records)
    records.claim(job_id, stale_before=time.time() - 60, worker="a:1")
    # Everything reported before "now" is stale for this claim: the first worker died.
    second = records.claim(job_id, stale_before=time.time() + 1, worker="b:2")
    assert (second.attempts, second.worker) == (2, "b:2")
    assert records.finish(job_id, 1, JobStatus.SUCCEEDED) is None
    records.report(job_id, 1, progress_seconds=59.0)
    assert records.get(job_id).progress_seconds == 0.0
    ended = records.finish(job_id, 2, JobStatus.SUCCEEDED, progress_seconds=60.0)
    assert (ended.status, ended.progress_seconds) == ("succeeded", 60.0)
    assert records.claim(job_id, stale_before=time.time() + 1, worker="c:3") is None


def test_cancel_reaches_the_running_attempt(records):
    job_id = _create(records)
    records.claim(job_id, stale_before=time.time() - 60, worker="a:1")
    assert records.report(job_id, 1, 10.0) == "running"
    assert records.cancel(job_id)
    assert records.report(job_id, 1, 20.0) == "cancelled"
    assert records.finish(job_id, 1, JobStatus.SUCCEEDED) is None
    assert records.get(job_id).status == "cancelled"
    assert not records.cancel(job_id)


def test_list_is_newest_first_and_pages(records):
    ids = [_create(records) for _ in range(5)]
    first = records.list(limit=2)
    assert [job.id for job in first] == ids[:-3:-1]
    rest = records.list(limit=10, before=first[-1].created_at)
    assert [job.id for job in rest] == ids[2::-1]
    records.claim(ids[0], stale_before=time.time() - 60, worker="a:1")
    assert [job.id for job in records.list(status="running")] == [ids[0]]
    assert records.counts() == {"queued": 4, "running": 1, "succeeded": 0, "failed": 0,
                                "cancelled": 0}


def test_retention_deletes_finished_jobs_and_their_files(records, tmp_path):
    files = DirectoryFiles(tmp_path / "files")
    done, waiting = _create(records), _create(records)
    for job_id in (done, waiting):
        files.put(job_id, AUDIO, b"audio")
    records.claim(done, stale_before=time.time() - 60, worker="a:1")
    records.finish(done, 1, JobStatus.SUCCEEDED)
    assert sweep_expired(records, files, retention_seconds=3600) == 0
    time.sleep(0.01)
    assert sweep_expired(records, files, retention_seconds=0.001) == 1
    assert records.get(done) is None and records.get(waiting) is not None
    assert files.job_ids() == [waiting]


def test_a_waiting_job_is_due_again_with_doubling_waits(records):
    """The broker's message may be lost: a job still waiting is sent again after the setting,
    then after waits at least as long as its age at the last send, and once per send even with
    several services on one database."""
    job_id = _create(records)
    created = records.get(job_id).created_at
    due = lambda now: records.redispatch_due(now=now, after=10, stale_before=now - 60)
    assert due(created + 9) == []
    assert due(created + 10) == [(job_id, created)]
    assert records.mark_dispatched(job_id, previous=created, now=created + 10,
                                   stale_before=created - 50)
    assert not records.mark_dispatched(job_id, previous=created, now=created + 10,
                                       stale_before=created - 50)
    assert due(created + 19) == []
    assert due(created + 20) == [(job_id, created + 10)]
    records.mark_dispatched(job_id, previous=created + 10, now=created + 20,
                            stale_before=created - 40)
    assert due(created + 39) == []  # 19 s since the last send, the job was 20 s old then
    assert due(created + 40) == [(job_id, created + 20)]


def test_only_jobs_nobody_runs_are_due_again(records):
    dead, running, done = _create(records), _create(records), _create(records)
    records.claim(dead, stale_before=time.time() - 60, worker="a:1")
    time.sleep(0.02)
    last_heard = time.time()  # the dead worker's heartbeat is older, the live one's newer
    time.sleep(0.02)
    for job_id in (running, done):
        records.claim(job_id, stale_before=time.time() - 60, worker="b:2")
    records.finish(done, 1, JobStatus.SUCCEEDED)
    due = lambda stale_before: [job_id for job_id, _ in records.redispatch_due(
        now=time.time() + 3600, after=10, stale_before=stale_before)]
    assert due(last_heard) == [dead]
    assert due(last_heard - 60) == []


def test_records_of_an_older_schema_gain_the_new_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    store = JobRecords.from_url(url)
    with store.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE amanuensis_jobs DROP COLUMN dispatched_at")
        connection.exec_driver_sql(
            "INSERT INTO amanuensis_jobs (id, status, created_at, attempts, duration_seconds, "
            "progress_seconds, options, callback_attempts) "
            "VALUES ('job_old', 'queued', 100.0, 0, 5.0, 0.0, '{}', 0)")
    store.close()
    store = JobRecords.from_url(url)
    assert store.get("job_old").status == "queued"
    assert store.redispatch_due(now=200.0, after=10, stale_before=0.0) == [("job_old", 100.0)]
    assert store.mark_dispatched("job_old", previous=100.0, now=200.0, stale_before=0.0)
    store.close()
