"""One pass of everything waiting: match events, activate requested Subscriptions, deliver due ones.

The after-commit task and beat's sweep both run it; each step is locked and idempotent, so
two passes at once only share the work.
"""

from __future__ import annotations

from django.utils import timezone

from .delivery import DELIVERY_BATCH, channel_deliver, channel_handshake
from .matching import events_match
from .models import SubscriptionChannel, SubscriptionDelivery

MAX_MATCH_BATCHES = 20


def subscriptions_work() -> dict[str, int]:
    """Match, handshake and deliver; the counts of each (for the task's result and tests)."""
    matched = 0
    for _ in range(MAX_MATCH_BATCHES):
        done = events_match()
        matched += done
        if not done:
            break
    handshakes = 0
    for channel_id in SubscriptionChannel.objects.filter(status=SubscriptionChannel.REQUESTED).values_list(
            "pk", flat=True):
        handshakes += channel_handshake(channel_id=channel_id) is not None
    delivered = 0
    due = (SubscriptionDelivery.objects.filter(delivered__isnull=True, next_attempt__lte=timezone.now(),
                                               channel__status=SubscriptionChannel.ACTIVE)
           .values_list("channel_id", flat=True).distinct())
    for channel_id in set(due):
        while (sent := channel_deliver(channel_id=channel_id)) == DELIVERY_BATCH:
            delivered += sent
        delivered += sent
    return {"matched": matched, "handshakes": handshakes, "delivered": delivered}
