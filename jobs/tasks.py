"""Celery tasks of the jobs app: thin wrappers around ``jobs.runner`` and ``jobs.services``."""

from __future__ import annotations

from celery import shared_task

from . import runner, services

# The sweep may wait for the broker longer than a request would: it runs on a worker.
SWEEP_PUBLISH_WAIT = 10.0


@shared_task(name="jobs.run", ignore_result=True, acks_late=False)
def run_job(job_id: int) -> None:
    """Run one job. Acknowledged on receipt: the row, not the message, is what survives a dead
    worker (the sweep requeues it), so a redelivery would only be a second message to ignore."""
    runner.job_run(job_id=job_id)


@shared_task(name="jobs.sweep", ignore_result=True, acks_late=False,
             soft_time_limit=60, time_limit=90)
def sweep_jobs() -> dict[str, int]:
    """Beat's sweep: jobs whose worker died are queued again, jobs never sent are sent."""
    return services.jobs_sweep(wait=SWEEP_PUBLISH_WAIT)
