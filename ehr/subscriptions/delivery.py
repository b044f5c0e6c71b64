"""Sending: the activation handshake, deliveries in sequence order, retries, the error status.

A Subscription's deliveries are sent by one worker at a time (an advisory lock per
Subscription). A failed delivery is tried again after ``SUBSCRIPTION_RETRY_BASE_SECONDS``
doubled per attempt (at most ``SUBSCRIPTION_RETRY_MAX_SECONDS``) and holds back the later
ones; after ``SUBSCRIPTION_MAX_FAILURES`` consecutive failures the Subscription goes to
``error`` (its resource says why) and its queued deliveries wait for a new activation.
Every attempt writes an AuditEvent in the same transaction as its outcome; log lines name
the Subscription, never a patient or a resource.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from access import policy
from ehr import fhirjson, rules
from ehr.fhir import FhirError
from ehr.models import Resource, ResourceVersion
from ledger.balp import audit_event_balp
from ledger.services import audit_append

from .matching import owner_context, try_lock
from .models import SubscriptionChannel, SubscriptionDelivery
from .receivers import Answer, receiver_post

logger = logging.getLogger(__name__)
DELIVERY_BATCH = 100


def channel_handshake(*, channel_id: int) -> str | None:
    """Ping a requested Subscription's endpoint: 2xx makes it active, anything else error."""
    with transaction.atomic():
        if not try_lock(f"subscription:{channel_id}"):
            return None
        channel = SubscriptionChannel.objects.filter(pk=channel_id, status=SubscriptionChannel.REQUESTED).first()
        if channel is None:
            return None
        answer = receiver_post(channel.endpoint, headers=channel.headers, body=None, content_type=None)
        if answer.ok:
            _status_set(channel, SubscriptionChannel.ACTIVE, "")
        else:
            logger.warning("subscription %s: handshake failed (%s)", channel.logical_id, answer.reason)
            _status_set(channel, SubscriptionChannel.ERROR, f"Handshake failed: {answer.reason}")
        return channel.status


def channel_deliver(*, channel_id: int, batch: int = DELIVERY_BATCH) -> int:
    """Send up to ``batch`` of an active Subscription's due deliveries in order; the number delivered.

    One transaction per batch, so a backlog after an outage is never one long transaction."""
    with transaction.atomic():
        if not try_lock(f"subscription:{channel_id}"):
            return 0
        channel = SubscriptionChannel.objects.filter(pk=channel_id, status=SubscriptionChannel.ACTIVE).first()
        if channel is None:
            return 0
        delivered = 0
        for delivery in channel.deliveries.filter(delivered__isnull=True).order_by("sequence")[:batch]:
            if delivery.next_attempt > timezone.now() or not _attempt(channel, delivery):
                break
            delivered += 1
        return delivered


def _attempt(channel: SubscriptionChannel, delivery: SubscriptionDelivery) -> bool:
    version = ResourceVersion.objects.filter(resource_type=delivery.resource_type, logical_id=delivery.logical_id,
                                             version_id=delivery.version_id).first()
    ctx = owner_context(channel)
    if version is None or not _may_see(ctx, version):
        # Gone, or no longer the owner's (a consent was withdrawn): nothing to tell.
        delivery.delivered = timezone.now()
        delivery.save(update_fields=["delivered"])
        return True
    body = version.text.encode() if channel.payload else None
    answer = receiver_post(channel.endpoint, headers=channel.headers, body=body, content_type=channel.payload)
    _audit(channel, version, answer, ctx)
    if answer.ok:
        delivery.delivered, delivery.attempts = timezone.now(), delivery.attempts + 1
        delivery.save(update_fields=["delivered", "attempts"])
        if channel.failures:
            channel.failures = 0
            channel.save(update_fields=["failures", "updated"])
        return True
    _failed(channel, delivery, answer)
    return False


def _may_see(ctx: policy.AccessContext, version: ResourceVersion) -> bool:
    try:
        rules.check_row(ctx, version)
    except FhirError:
        return False
    return True


def _failed(channel: SubscriptionChannel, delivery: SubscriptionDelivery, answer: Answer) -> None:
    delivery.attempts += 1
    backoff = settings.SUBSCRIPTION_RETRY_BASE_SECONDS * 2 ** (delivery.attempts - 1)
    delivery.next_attempt = timezone.now() + timedelta(seconds=min(backoff, settings.SUBSCRIPTION_RETRY_MAX_SECONDS))
    delivery.save(update_fields=["attempts", "next_attempt"])
    channel.failures += 1
    channel.save(update_fields=["failures", "updated"])
    logger.warning("subscription %s: delivery %s failed (%s), attempt %s", channel.logical_id,
                   delivery.sequence, answer.reason, delivery.attempts)
    if channel.failures >= settings.SUBSCRIPTION_MAX_FAILURES:
        _status_set(channel, SubscriptionChannel.ERROR,
                    f"{channel.failures} deliveries failed in a row, the last: {answer.reason}")


def _audit(channel: SubscriptionChannel, version: ResourceVersion, answer: Answer,
           ctx: policy.AccessContext) -> None:
    """The delivery as an access: the owner's system read the resource through its Subscription."""
    policy.note_consents(ctx, {version.patient_id})
    outcome = "0" if answer.ok else "4"
    agent = f"Subscription/{channel.logical_id}"  # not a username: no account can claim it
    now = timezone.now()
    event = audit_event_balp(
        interaction="read", agent=agent, outcome=outcome, recorded=now, observer=settings.NODE_NAME,
        resource=f"{version.resource_type}/{version.logical_id}/_history/{version.version_id}",
        patient=version.patient_id, outcome_description=None if answer.ok else answer.reason,
        consent_tokens=sorted(set(ctx.consent_tokens)))
    audit_append(event=event, patient_id=version.patient_id, agent=agent, outcome=outcome, recorded=now)


def _status_set(channel: SubscriptionChannel, status: str, error: str) -> None:
    """The server's status in the channel row, then in a new version of the resource."""
    from ehr.services.storage import Pending, replace_current

    channel.status, channel.error = status, error
    channel.save(update_fields=["status", "error", "updated"])
    row = Resource.objects.select_for_update().get(pk=channel.resource_id)
    if row.deleted:
        return
    replace_current(row, Pending("Subscription", row.logical_id, *_with_status(row.text, status, error), "PUT"))


def _with_status(text: str, status: str, error: str) -> tuple[str, dict]:
    """The stored text with ``status`` and ``error`` replaced, every other member kept verbatim."""
    members = [(name, raw) for name, raw in fhirjson.split_members(text) if name not in ("status", "error")]
    members.append(("status", fhirjson.dumps(status)))
    if error:
        members.append(("error", fhirjson.dumps(error)))
    spliced = fhirjson.join_members(members)
    return spliced, fhirjson.loads(spliced)
