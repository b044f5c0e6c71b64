"""The job row: what was asked, by whom, how far it got, and which worker holds it now.

The row is the job's truth, never the broker's message: a message lost with Redis, or a worker
killed mid-job, leaves a row the sweep (``jobs.sweep``) sends again. ``lease_owner`` and
``lease_expires`` say who runs it; a lease not renewed in time means the worker died, and the
next run starts from ``checkpoint``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)


class Job(models.Model):
    kind = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    # Single-flight: at most one unfinished job per (kind, key); "" is no key (any number).
    key = models.CharField(max_length=200, blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    checkpoint = models.JSONField(null=True, blank=True)
    done = models.BigIntegerField(default=0)
    total = models.BigIntegerField(null=True, blank=True)
    message = models.CharField(max_length=300, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                     on_delete=models.SET_NULL, related_name="+")
    created = models.DateTimeField(auto_now_add=True)
    # When the run message reached the broker; NULL: not yet (the sweep sends it).
    sent_at = models.DateTimeField(null=True, blank=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "key"], name="job_single_flight",
                                    condition=models.Q(status__in=UNFINISHED) & ~models.Q(key="")),
        ]
        indexes = [
            models.Index(fields=["status", "lease_expires"], name="job_unfinished",
                         condition=models.Q(status__in=UNFINISHED)),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk} ({self.status})"

    @property
    def progress(self) -> float | None:
        """Done over total (0..1); None while the total is unknown."""
        if not self.total:
            return 1.0 if self.status == JobStatus.SUCCEEDED else None
        return min(1.0, self.done / self.total)

    @property
    def is_finished(self) -> bool:
        return self.status not in UNFINISHED
