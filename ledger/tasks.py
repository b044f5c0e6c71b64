"""Celery tasks of the ledger app: thin wrappers that build the chain client and call a service."""

from __future__ import annotations

import logging

from celery import shared_task

from .anchoring import anchor_tick
from .chain import LedgerUnavailable, chain_client, consent_client
from .consents.reconcile import consent_reconcile
from .consents.sync import consent_sync

logger = logging.getLogger(__name__)


@shared_task(name="ledger.anchor_audit", ignore_result=True, acks_late=False,
             soft_time_limit=45, time_limit=60)
def anchor_audit() -> dict:
    """Beat's anchoring tick (every ``AUDIT_ANCHOR_TICK_SECONDS``).

    No retries: the tick is single-flight and resumes from the database, so the next
    beat is the retry; a chain outage is reported in the result, not raised.
    """
    return anchor_tick(client=chain_client()).as_dict()


@shared_task(name="ledger.consent_sync", ignore_result=True, acks_late=False,
             soft_time_limit=45, time_limit=60)
def consent_sync_task() -> dict:
    """Beat's consent tick (every ``CONSENT_SYNC_SECONDS``): send grants and revokes, then
    confirm grants from chain events. Single-flight and resumable like the anchoring tick."""
    return consent_sync(client=consent_client()).as_dict()


@shared_task(name="ledger.consent_reconcile", ignore_result=True, soft_time_limit=240, time_limit=300)
def consent_reconcile_task() -> list[str]:
    """Beat's mirror-against-chain comparison; each divergence is logged as an error."""
    try:
        divergences = consent_reconcile(client=consent_client())
    except LedgerUnavailable as error:
        logger.warning("consent reconciliation skipped: %s", error)
        return []
    for divergence in divergences:
        logger.error("consent mirror diverges from chain: %s", divergence)
    return [str(d) for d in divergences]
