"""Events to deliveries: which active Subscriptions a stored version matches, as their owner sees it.

One matcher at a time (a transaction-scoped advisory lock), so each Subscription's sequence
numbers follow the order of the writes. A Subscription's owner is its organization: the
criteria run as a search by a chart role of that organization would (its own records and
those of patients who consented to it for treatment; ``ehr.rules.visible``).
"""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from access.models import Role
from access.policy import AccessContext
from ehr import rules
from ehr.search import SearchError, parse_search
from ehr.search.engine import matching

from .channel import criteria_params
from .models import SubscriptionChannel, SubscriptionDelivery, SubscriptionEvent

MATCH_LOCK = "ehr.subscriptions.match"
BATCH = 500


def owner_context(channel: SubscriptionChannel) -> AccessContext:
    """The access context a search by the Subscription's owner gets."""
    return AccessContext(user=None, role=Role.INTEGRATION, organization_id=channel.organization_id)


def events_match(*, batch: int = BATCH) -> int:
    """Match one batch of events (oldest first); the number matched, 0 if another matcher runs."""
    with transaction.atomic():
        if not try_lock(MATCH_LOCK):
            return 0
        events = list(SubscriptionEvent.objects.order_by("id")[:batch])
        if not events:
            return 0
        channels = list(SubscriptionChannel.objects.filter(
            status=SubscriptionChannel.ACTIVE, criteria_type__in={e.resource_type for e in events}))
        sequences = dict(SubscriptionDelivery.objects.filter(channel__in=channels)
                         .values("channel_id").annotate(last=Max("sequence")).values_list("channel_id", "last"))
        deliveries = []
        now = timezone.now()
        for event in events:
            for channel in channels:
                if channel.criteria_type == event.resource_type and matches(channel, event.logical_id):
                    sequences[channel.pk] = sequences.get(channel.pk, 0) + 1
                    deliveries.append(SubscriptionDelivery(
                        channel=channel, sequence=sequences[channel.pk], resource_type=event.resource_type,
                        logical_id=event.logical_id, version_id=event.version_id, next_attempt=now))
        SubscriptionDelivery.objects.bulk_create(deliveries)
        SubscriptionEvent.objects.filter(pk__in=[e.pk for e in events]).delete()  # matched: done
        return len(events)


def matches(channel: SubscriptionChannel, logical_id: str) -> bool:
    """The criteria, restricted to this resource, return it to the owner."""
    try:
        query = parse_search(channel.criteria_type, [*criteria_params(channel.criteria), ("_id", logical_id)],
                             strict=False)
    except SearchError:
        return False
    visible = rules.visible(owner_context(channel), "search")
    return matching(query, visible).filter(visible, logical_id=logical_id).exists()


def try_lock(name: str) -> bool:
    """A transaction-scoped advisory lock, or False at once when another transaction holds it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", [name])
        return bool(cursor.fetchone()[0])
