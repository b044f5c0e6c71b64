"""R4 Subscriptions, rest-hook channel (docs/subscriptions.md).

The life of a notification, each step safe to run twice:

1. A write stores a version; in its transaction ``outbox.versions_stored`` records an event
   row (and, for a Subscription, the channel row its text describes). After commit a
   bounded publish asks a worker to match; beat's sweep does it anyway.
2. ``matching.events_match`` (single-flight) runs each active Subscription's criteria,
   restricted to the written resource, as its owner would search, and queues a delivery per
   match with the next number of that Subscription's sequence.
3. ``delivery.channel_deliver`` sends a Subscription's deliveries in sequence order; a failed
   one is retried with exponential backoff and holds back those after it; after
   ``SUBSCRIPTION_MAX_FAILURES`` the Subscription goes to ``error``.

A Subscription written ``requested`` (or with a changed channel) is activated by a handshake
ping (``delivery.channel_handshake``): 2xx makes it ``active``, anything else ``error``.
"""
