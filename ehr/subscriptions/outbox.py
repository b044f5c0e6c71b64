"""The hook every stored version passes through (``ehr.services.storage``): the notification outbox.

In the write's own transaction each stored version of a type some Subscription watches gets
an event row (one indexed query per write tells which types are watched), and a Subscription's
channel row is rewritten from its text (checked first: a refused endpoint fails the write).
After commit one bounded publish asks a worker to match; if the broker is down the event
rows wait for beat's sweep, so nothing is lost.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ehr import fhirjson
from jobs.broker import BoundedPublisher

from .channel import Channel, channel_of
from .models import SubscriptionChannel, SubscriptionEvent

SUBSCRIPTION = "Subscription"
PUBLISHER = BoundedPublisher("subscription notifications", "subscriptions-publish")
os.register_at_fork(after_in_child=PUBLISHER.reset)


def versions_stored(rows: list[Any]) -> None:
    """Record what was written for the matcher; keep each written Subscription's channel."""
    if not settings.SUBSCRIPTIONS_ENABLED:
        return
    for row in rows:
        if row.resource_type == SUBSCRIPTION:
            _channel_keep(row)
    now = timezone.now()
    watched = _watched_types({row.resource_type for row in rows if not row.deleted} - {SUBSCRIPTION})
    events = [SubscriptionEvent(resource_type=row.resource_type, logical_id=row.logical_id,
                                version_id=row.version_id, recorded=now)
              for row in rows if row.resource_type in watched and not row.deleted]
    if events:
        SubscriptionEvent.objects.bulk_create(events)
    if events or any(row.resource_type == SUBSCRIPTION for row in rows):
        transaction.on_commit(publish_match)


def _watched_types(types: set[str]) -> set[str]:
    """The types some Subscription (active, or about to be) watches: only their writes are recorded."""
    if not types:
        return set()
    live = (SubscriptionChannel.ACTIVE, SubscriptionChannel.REQUESTED)
    return set(SubscriptionChannel.objects.filter(status__in=live, criteria_type__in=types)
               .values_list("criteria_type", flat=True).distinct())


def publish_match() -> None:
    """Ask a worker to match now (bounded; the sweep does it when this does not get through)."""
    from ehr.tasks import subscriptions_work  # the task module imports the services

    PUBLISHER.send(subscriptions_work.delay, wait=settings.BROKER_PUBLISH_TIMEOUT,
                   eager=bool(subscriptions_work.app.conf.task_always_eager))


def _channel_keep(row: Any) -> None:
    """The channel row of a Subscription version; its status is decided here (docstring of ``next_status``)."""
    stored = SubscriptionChannel.objects.filter(resource_id=row.pk).first()
    if row.deleted:
        if stored is not None:
            stored.status = SubscriptionChannel.OFF
            stored.save(update_fields=["status", "updated"])
        return
    channel = channel_of(fhirjson.loads(row.text))
    values = {"logical_id": row.logical_id, "organization_id": row.organization_id,
              "criteria_type": channel.criteria_type, "criteria": channel.criteria,
              "endpoint": channel.endpoint, "payload": channel.payload, "headers": channel.headers}
    status = next_status(channel, stored, values)
    if stored is None or status != stored.status:
        values.update(failures=0, error="" if status != SubscriptionChannel.ERROR else channel.error)
    SubscriptionChannel.objects.update_or_create(resource_id=row.pk, defaults={**values, "status": status})


def next_status(channel: Channel, stored: SubscriptionChannel | None, values: dict) -> str:
    """The server's status after a write of the resource.

    ``off`` stays off; ``requested``, a changed channel or a client asking ``active`` of
    a Subscription not active asks for a handshake. The server's own writes (``active``,
    ``error``) find the row already in that status and the channel unchanged, so they keep it.
    """
    unchanged = stored is not None and all(getattr(stored, name) == value for name, value in values.items()
                                           if name != "organization_id")
    if channel.status == "off":
        return SubscriptionChannel.OFF
    if channel.status == "error":
        return SubscriptionChannel.ERROR if unchanged and stored.status == SubscriptionChannel.ERROR \
            else SubscriptionChannel.OFF
    if channel.status == "active" and unchanged and stored.status == SubscriptionChannel.ACTIVE:
        return SubscriptionChannel.ACTIVE
    return SubscriptionChannel.REQUESTED
