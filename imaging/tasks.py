"""Celery tasks of the imaging app: thin wrappers around ``imaging.services``."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from jobs.runner import job_run
from jobs.services import job_submit

from . import services
from .job_kinds import DEID_SWEEP, DEID_SWEEP_KEY


@shared_task(name="imaging.deidentify_instance", ignore_result=True, acks_late=True,
             autoretry_for=(OSError, OperationalError, services.DeidentificationUnavailable),
             retry_backoff=True, retry_backoff_max=600, max_retries=8,
             soft_time_limit=120, time_limit=150)
def deidentify_instance(instance_id: int) -> None:
    """Make the de-identified copy of one stored instance (queued after its ingest commits).

    Idempotent: a copy already made is kept. Storage or database outages, and a node where
    the de-identification module is not installed yet, are retried with backoff.
    """
    services.instance_deidentify(instance_id=instance_id)


@shared_task(name="imaging.deidentify_instances", ignore_result=True, acks_late=True,
             autoretry_for=(OSError, OperationalError, services.DeidentificationUnavailable),
             retry_backoff=True, retry_backoff_max=600, max_retries=8,
             soft_time_limit=600, time_limit=660)
def deidentify_instances(instance_ids: list[int]) -> None:
    """Make the de-identified copies of the instances one request stored (one message for all).

    Idempotent like ``deidentify_instance``: a retry after a failure part way through keeps
    the copies already made and makes the rest.
    """
    for instance_id in instance_ids:
        services.instance_deidentify(instance_id=instance_id)


@shared_task(name="imaging.deidentify_pending", ignore_result=True, acks_late=False,
             soft_time_limit=60, time_limit=90)
def deidentify_pending() -> int:
    """Beat's sweep of the outbox: publish the copies whose message never reached the broker.

    An ingest publishes after commit with a short timeout and leaves what failed here (a
    broker outage); a copy published twice is made once. The sweep is the job
    ``imaging.deid_sweep`` (``imaging.job_kinds``), single-flight and run here, on this worker:
    a sweep still running elsewhere is left alone. Returns how many were published.
    """
    job = job_submit(kind=DEID_SWEEP, key=DEID_SWEEP_KEY, send=False)
    finished = job_run(job_id=job.pk)
    return (finished.result or {}).get("published", 0) if finished is not None else 0
