"""Celery tasks of the ledger app: thin wrappers that build the chain client and call a service."""

from __future__ import annotations

from celery import shared_task

from .anchoring import anchor_tick
from .chain import chain_client


@shared_task(name="ledger.anchor_audit", ignore_result=True, acks_late=False,
             soft_time_limit=45, time_limit=60)
def anchor_audit() -> dict:
    """Beat's anchoring tick (every ``AUDIT_ANCHOR_TICK_SECONDS``).

    No retries: the tick is single-flight and resumes from the database, so the next
    beat is the retry; a chain outage is reported in the result, not raised.
    """
    return anchor_tick(client=chain_client()).as_dict()
