"""Celery tasks of the ehr app: thin wrappers around the Subscription work (``ehr.subscriptions``)."""

from __future__ import annotations

from celery import shared_task

from ehr.subscriptions.work import subscriptions_work as work


@shared_task(name="ehr.subscriptions_work", ignore_result=True, acks_late=False,
             soft_time_limit=240, time_limit=300)
def subscriptions_work() -> dict[str, int]:
    """Match new writes to Subscriptions and send what is due. Published after each write's
    commit and run by beat every ``SUBSCRIPTION_SWEEP_SECONDS``: the outbox rows, not the
    message, carry the work, so a lost message is only late."""
    return work()
