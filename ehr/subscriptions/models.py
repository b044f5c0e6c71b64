"""Subscription state beside the stored resource: its channel, the event outbox, deliveries."""

from django.db import models


class SubscriptionChannel(models.Model):
    """What a stored Subscription asks for, and where its activation and deliveries stand.

    Rewritten from the resource's text on each write of it (``outbox``); ``status`` is the
    server's: the resource's own ``status`` follows it through server-written versions.
    """

    REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"

    resource = models.OneToOneField("ehr.Resource", on_delete=models.CASCADE, related_name="+")
    logical_id = models.CharField(max_length=64, unique=True)
    organization_id = models.CharField(max_length=64, null=True)
    status = models.CharField(max_length=16)
    criteria_type = models.CharField(max_length=64)
    criteria = models.TextField()
    endpoint = models.TextField()
    payload = models.CharField(max_length=64, blank=True)
    headers = models.JSONField(default=list)
    failures = models.PositiveIntegerField(default=0)  # consecutive failed attempts
    error = models.TextField(blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["status", "criteria_type"], name="subscription_status_type")]


class SubscriptionEvent(models.Model):
    """One stored version waiting to be matched (the notification outbox); deleted once matched."""

    resource_type = models.CharField(max_length=64)
    logical_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    recorded = models.DateTimeField()


class SubscriptionDelivery(models.Model):
    """One notification of one Subscription, sent in ``sequence`` order."""

    channel = models.ForeignKey(SubscriptionChannel, on_delete=models.CASCADE, related_name="deliveries")
    sequence = models.PositiveBigIntegerField()
    resource_type = models.CharField(max_length=64)
    logical_id = models.CharField(max_length=64)
    version_id = models.PositiveIntegerField()
    delivered = models.DateTimeField(null=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["channel", "sequence"], name="delivery_sequence_unique")]
        indexes = [models.Index(fields=["channel", "sequence"], condition=models.Q(delivered__isnull=True),
                                name="delivery_pending")]
