"""The runner against PostgreSQL: progress, single-flight, a dead worker resumed, cancel, failure."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.models import Job, JobStatus
from jobs.registry import UnknownJobKind
from jobs.runner import job_run
from jobs.services import job_cancel, job_submit, jobs_sweep
from tests.jobs.kinds import WorkerKilled

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice-jobs", password=None)


def lease_expired(job: Job) -> None:
    """Time passes: the dead worker's lease runs out."""
    Job.objects.filter(pk=job.pk).update(lease_expires=timezone.now() - timedelta(seconds=1))


def test_a_job_runs_to_the_end_and_reports_its_progress(alice):
    job = job_submit(kind="tests.count", params={"total": 4}, user=alice, send=False)

    finished = job_run(job_id=job.pk)

    assert finished.status == JobStatus.SUCCEEDED and finished.message == "done"
    assert (finished.done, finished.total, finished.progress) == (4, 4, 1.0)
    assert finished.result == {"counted": 4, "started_after": 0, "attempt": 1}
    assert finished.attempts == 1 and finished.requested_by == alice
    assert finished.created <= finished.started <= finished.heartbeat <= finished.finished
    assert (finished.lease_owner, finished.lease_expires) == ("", None)


def test_a_job_runs_once_however_many_messages_arrive(alice):
    job = job_submit(kind="tests.count", params={"total": 1}, send=False)

    assert job_run(job_id=job.pk) is not None
    assert job_run(job_id=job.pk) is None
    assert Job.objects.get(pk=job.pk).attempts == 1


def test_two_submits_of_one_key_make_one_job_and_a_finished_one_frees_the_key():
    first = job_submit(kind="tests.count", params={"total": 1}, key="nightly", send=False)
    second = job_submit(kind="tests.count", params={"total": 9}, key="nightly", send=False)
    other_key = job_submit(kind="tests.count", params={"total": 1}, key="weekly", send=False)

    assert second.pk == first.pk and second.params == {"total": 1}
    assert other_key.pk != first.pk
    assert Job.objects.filter(kind="tests.count", key="nightly").count() == 1

    job_run(job_id=first.pk)
    after = job_submit(kind="tests.count", params={"total": 1}, key="nightly", send=False)
    assert after.pk != first.pk and Job.objects.filter(key="nightly").count() == 2


def test_jobs_without_a_key_are_never_merged():
    assert job_submit(kind="tests.count", params={}, send=False).pk != \
        job_submit(kind="tests.count", params={}, send=False).pk


def test_an_unknown_kind_is_refused_at_submit():
    with pytest.raises(UnknownJobKind):
        job_submit(kind="tests.nobody", send=False)
    assert not Job.objects.exists()


def test_a_worker_killed_mid_job_is_requeued_by_the_sweep_and_resumes_from_its_checkpoint(eager):
    # Given a job whose worker died after step 3 of 6 (checkpoint saved, lease still held).
    job = job_submit(kind="tests.count", params={"total": 6, "die_at": 4}, send=False)
    with pytest.raises(WorkerKilled):
        job_run(job_id=job.pk)
    dead = Job.objects.get(pk=job.pk)
    assert dead.status == JobStatus.RUNNING and dead.checkpoint == {"step": 3} and dead.done == 3

    # When the sweep runs before the lease expired: the worker may only be slow, nothing happens.
    assert jobs_sweep()["requeued"] == 0
    # When the lease has expired and the sweep runs (it sends the job: eager runs it here).
    lease_expired(job)
    counts = jobs_sweep()

    # Then it was requeued, sent, and the second run started after step 3 and finished.
    assert counts == {"requeued": 1, "failed": 0, "cancelled": 0, "sent": 1}
    done = Job.objects.get(pk=job.pk)
    assert done.status == JobStatus.SUCCEEDED
    assert done.result == {"counted": 6, "started_after": 3, "attempt": 2}
    assert done.attempts == 2 and done.progress == 1.0


def test_a_job_whose_worker_dies_every_time_fails_after_its_attempts(settings, broker):
    settings.JOBS_MAX_ATTEMPTS = 2
    job = job_submit(kind="tests.count", params={"total": 3, "die_at": 1, "die_attempts": 99}, send=False)
    for _ in range(2):
        with pytest.raises(WorkerKilled):
            job_run(job_id=job.pk)
        lease_expired(job)
        counts = jobs_sweep(wait=5)

    assert counts["failed"] == 1 and counts["requeued"] == 0
    failed = Job.objects.get(pk=job.pk)
    assert failed.status == JobStatus.FAILED and failed.attempts == 2
    assert failed.message == "failed: its worker stopped in each of 2 attempts"
    assert failed.finished is not None and job_run(job_id=job.pk) is None


def test_a_queued_job_cancelled_never_runs(alice):
    job = job_submit(kind="tests.count", params={"total": 2}, user=alice, send=False)

    cancelled = job_cancel(job_id=job.pk, user=alice)

    assert cancelled.status == JobStatus.CANCELLED and cancelled.finished is not None
    assert job_run(job_id=job.pk) is None
    assert Job.objects.get(pk=job.pk).done == 0 and Job.objects.get(pk=job.pk).started is None


def test_a_running_job_cancelled_stops_at_its_next_report(alice):
    job = job_submit(kind="tests.count", params={"total": 10, "cancel_at": 3, "user": alice.pk},
                     user=alice, send=False)

    stopped = job_run(job_id=job.pk)

    assert stopped.status == JobStatus.CANCELLED and stopped.message == "cancelled"
    # step 3's checkpoint was saved, and in saving it the handler saw the cancel and stopped
    assert stopped.checkpoint == {"step": 3} and stopped.done == 2
    assert stopped.result is None and stopped.cancel_requested


def test_only_the_starter_may_cancel(alice):
    mallory = get_user_model().objects.create_user("mallory-jobs", password=None)
    job = job_submit(kind="tests.count", params={"total": 2}, user=alice, send=False)

    assert job_cancel(job_id=job.pk, user=mallory) is None
    assert job_cancel(job_id=job.pk, user=None) is None
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


def test_a_cancelled_job_whose_worker_died_is_cancelled_by_the_sweep(alice):
    job = job_submit(kind="tests.count", params={"total": 3, "die_at": 2}, user=alice, send=False)
    with pytest.raises(WorkerKilled):
        job_run(job_id=job.pk)
    job_cancel(job_id=job.pk, user=alice)
    lease_expired(job)

    assert jobs_sweep()["cancelled"] == 1
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


def test_a_failing_handler_fails_the_job_naming_only_the_error_class(caplog):
    job = job_submit(kind="tests.fails", send=False)

    failed = job_run(job_id=job.pk)

    assert failed.status == JobStatus.FAILED and failed.message == "failed: ValueError"
    assert "Jane" not in caplog.text and "Jane" not in str(Job.objects.filter(pk=job.pk).values().get())


def test_a_retryable_error_requeues_the_job_until_it_succeeds(eager):
    job = job_submit(kind="tests.flaky", send=False)

    first = job_run(job_id=job.pk)
    assert first.status == JobStatus.QUEUED and first.message == "requeued after attempt 1: ConnectionError"
    jobs_sweep()

    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    assert Job.objects.get(pk=job.pk).result == "second time lucky"


def test_the_sweep_is_on_beat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["jobs.sweep"]
    assert entry["task"] == "jobs.sweep" and entry["schedule"] == settings.JOBS_SWEEP_SECONDS
