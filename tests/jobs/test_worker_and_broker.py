"""Real processes: a worker killed with SIGKILL mid-job, and Redis down at submit.

A worker here is a Celery process on a Redis of the test's own and the test database. Killing
it leaves the row running with a lease nobody renews; the sweep (run here, as beat would)
queues it again and another worker resumes from the checkpoint. A submit while Redis is down
keeps the row, and the sweep sends it once Redis is back.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis

from config.stack.services import free_port
from jobs.models import Job, JobStatus
from jobs.services import job_submit, jobs_sweep
from tests.jobs.conftest import use_broker, worker_process

pytestmark = pytest.mark.django_db(transaction=True)

LEASE_SECONDS = "2"


def wait_until(condition, what: str, worker, log_path, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if worker.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} (worker exit {worker.poll()}): {log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    return value


def queued_job_ids(url: str) -> list[int]:
    """The job ids of the ``jobs.run`` messages waiting in Redis."""
    messages = [json.loads(raw) for raw in redis.Redis.from_url(url).lrange("celery", 0, -1)]
    return [json.loads(m["headers"]["argsrepr"])[0] for m in messages if m["headers"]["task"] == "jobs.run"]


def test_a_worker_killed_with_sigkill_mid_job_is_resumed_from_its_checkpoint(broker, settings, tmp_path):
    settings.JOBS_LEASE_SECONDS = float(LEASE_SECONDS)
    log = tmp_path / "worker.log"
    job = job_submit(kind="tests.count", params={"total": 40, "sleep": 0.1})  # sent on commit
    first = worker_process(broker.url, log, JOBS_LEASE_SECONDS=LEASE_SECONDS)
    try:
        # Given a worker part way through the job.
        wait_until(lambda: (Job.objects.get(pk=job.pk).checkpoint or {}).get("step", 0) >= 5,
                   "the job did not start", first, log)
        # When it is killed without warning.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed = Job.objects.get(pk=job.pk)
    assert killed.status == JobStatus.RUNNING and killed.lease_owner and killed.done < 40
    at_kill = killed.checkpoint["step"]

    # Then the sweep leaves it while the lease holds, and requeues and sends it once it expired.
    time.sleep(float(LEASE_SECONDS) + 0.5)
    assert jobs_sweep(wait=5) == {"requeued": 1, "failed": 0, "cancelled": 0, "sent": 1}
    second = worker_process(broker.url, log, JOBS_LEASE_SECONDS=LEASE_SECONDS)
    try:
        done = wait_until(lambda: Job.objects.filter(pk=job.pk, status=JobStatus.SUCCEEDED).first(),
                          "the job was not resumed", second, log)
    finally:
        second.terminate()
        second.wait(30)

    # And the second run started from the checkpoint the first left, not from zero.
    assert done.attempts == 2 and done.progress == 1.0
    assert done.result == {"counted": 40, "started_after": done.result["started_after"], "attempt": 2}
    assert at_kill <= done.result["started_after"] < 40


def test_redis_down_at_submit_keeps_the_row_and_the_sweep_sends_it(broker, caplog):
    # Given Redis unreachable (nothing listens on the port).
    use_broker(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()

    # When a job is submitted.
    job = job_submit(kind="tests.count", params={"total": 1}, key="once")

    # Then the submit answered within the publish timeout, the row is committed and unsent.
    assert time.monotonic() - started < 3
    row = Job.objects.get(pk=job.pk)
    assert row.status == JobStatus.QUEUED and row.sent_at is None
    assert any("jobs left to the sweep" in record.getMessage() for record in caplog.records)

    # When Redis is back and the sweep runs.
    use_broker(broker.url)
    assert jobs_sweep(wait=5)["sent"] == 1

    # Then the message is in Redis, the row says it was sent, and a second sweep sends nothing.
    assert queued_job_ids(broker.url) == [job.pk]
    assert Job.objects.get(pk=job.pk).sent_at is not None
    assert jobs_sweep(wait=5)["sent"] == 0 and queued_job_ids(broker.url) == [job.pk]
