"""Celery tasks of the imaging app: thin wrappers around ``imaging.services``."""

from __future__ import annotations

from celery import shared_task
from django.db import OperationalError

from . import services

# The sweep may wait for the broker longer than a request would: it runs on a worker, inside
# its time limit, and answers nobody.
SWEEP_PUBLISH_WAIT = 30.0


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
    broker outage); a copy published twice is made once. Returns how many were published.
    """
    return services.deidentify_queue(services.instances_deidentify_pending(), wait=SWEEP_PUBLISH_WAIT)
