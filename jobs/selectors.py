"""Reads of the jobs app."""

from __future__ import annotations

from .models import Job


def job_get(*, job_id: int, user) -> Job | None:
    """The job if ``user`` started it; None otherwise, exactly as for an id that does not exist."""
    if user is None or not user.is_authenticated:
        return None
    return Job.objects.filter(pk=job_id, requested_by=user).first()


def jobs_unfinished(*, kind: str) -> list[Job]:
    return list(Job.objects.filter(kind=kind, status__in=("queued", "running")).order_by("pk"))
