"""Writes of the jobs app: submit, send, cancel, and the sweep that survives dead workers.

A job is a row first and a broker message second: ``job_submit`` commits the row and
publishes ``jobs.run`` after the commit, waiting ``BROKER_PUBLISH_TIMEOUT`` seconds at most.
A message that never reached the broker (Redis down), or was lost with it, is sent again by
``jobs_sweep``, which also requeues the jobs whose worker died (lease expired). Two messages
for one job are harmless: ``jobs.runner.job_run`` claims the row atomically.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from .broker import PUBLISHER
from .models import UNFINISHED, Job, JobStatus
from .registry import kind_find, kind_get

logger = logging.getLogger(__name__)

# Jobs the sweep sends per run: enough for any backlog after an outage, bounded per tick.
SWEEP_BATCH = 200


def job_submit(*, kind: str, params: dict[str, Any] | None = None, key: str = "", user=None,
               send: bool = True) -> Job:
    """The job of ``kind`` to run, committed and (after commit) sent to a worker.

    With a ``key``, single-flight: while a job of this kind and key is queued or running, that
    job is returned and no other is made (a partial unique constraint decides a race). With
    ``send=False`` the caller runs it itself (``jobs.runner.job_run``).
    """
    kind_get(kind)  # an unknown kind is refused now, not by a worker later
    for _ in range(3):
        with transaction.atomic():
            existing = _unfinished(kind=kind, key=key)
            if existing is not None:
                return existing
            try:
                with transaction.atomic():
                    job = Job.objects.create(kind=kind, key=key, params=params or {},
                                             requested_by=user if user and user.pk else None)
            except IntegrityError:
                continue  # a concurrent submit of the same key won: return its job
            if send:
                transaction.on_commit(lambda: job_send(job_id=job.pk))
            return job
    raise RuntimeError(f"job {kind!r} single-flight key kept changing hands")


def _unfinished(*, kind: str, key: str) -> Job | None:
    if not key:
        return None
    return Job.objects.filter(kind=kind, key=key, status__in=UNFINISHED).first()


def job_send(*, job_id: int, wait: float | None = None) -> bool:
    """Publish ``jobs.run`` for a queued job, note it sent; False if the broker did not take it."""
    from .tasks import run_job

    job = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).first()
    if job is None:
        return False
    spec = kind_find(job.kind)
    options = {name: getattr(spec, name) for name in ("soft_time_limit", "time_limit")
               if spec is not None and getattr(spec, name)}
    sent = PUBLISHER.send(lambda: run_job.apply_async(args=[job_id], retry=False, **options),
                          wait=settings.BROKER_PUBLISH_TIMEOUT if wait is None else wait,
                          eager=run_job.app.conf.task_always_eager)
    if sent:
        Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(sent_at=timezone.now())
    return sent


def job_cancel(*, job_id: int, user) -> Job | None:
    """Cancel a job for its starter; None when ``user`` did not start it (or it does not exist).

    A queued job is cancelled at once; a running one is asked to stop and stops at its next
    progress, checkpoint or heartbeat (``JobContext``). A finished job is left as it is.
    """
    if user is None or not user.pk:
        return None
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id, requested_by=user).first()
        if job is None or job.is_finished:
            return job
        if job.status == JobStatus.QUEUED:
            job.status, job.finished = JobStatus.CANCELLED, timezone.now()
            job.message = "cancelled before it started"
        else:
            job.cancel_requested, job.message = True, "cancel requested"
        job.save(update_fields=["status", "finished", "message", "cancel_requested"])
    return job


def jobs_sweep(*, wait: float | None = None) -> dict[str, int]:
    """Beat's sweep: requeue the jobs whose worker died, then send the queued jobs nobody has.

    A running job whose lease expired (its worker stopped renewing it) is queued again from its
    checkpoint, or failed once it used ``max_attempts``, or cancelled if that was asked. A
    queued job never sent (the broker was down at submit), or sent ``JOBS_REQUEUE_SECONDS`` ago
    and still not started (the message was lost), is sent again. Returns the counts.
    """
    counts = _requeue_expired()
    counts["sent"] = _send_due(wait=wait)
    return counts


def _requeue_expired() -> dict[str, int]:
    counts = {"requeued": 0, "failed": 0, "cancelled": 0}
    now = timezone.now()
    with transaction.atomic():
        expired = Job.objects.select_for_update(skip_locked=True).filter(
            status=JobStatus.RUNNING, lease_expires__lt=now)
        for job in expired:
            outcome = _after_dead_worker(job, now=now)
            counts[outcome] += 1
            logger.warning("job %s #%s: worker %s stopped renewing its lease: %s",
                           job.kind, job.pk, job.lease_owner or "?", outcome)
            job.lease_owner, job.lease_expires = "", None
            job.save(update_fields=["status", "message", "finished", "sent_at",
                                    "lease_owner", "lease_expires"])
    return counts


def _after_dead_worker(job: Job, *, now) -> str:
    """What becomes of a job whose worker died: cancelled, failed past its attempts, or queued."""
    attempts = max_attempts(job.kind)
    if job.cancel_requested:
        job.status, job.finished = JobStatus.CANCELLED, now
        job.message = "cancelled (its worker stopped)"
        return "cancelled"
    if job.attempts >= attempts:
        job.status, job.finished = JobStatus.FAILED, now
        job.message = f"failed: its worker stopped in each of {job.attempts} attempts"
        return "failed"
    job.status, job.sent_at = JobStatus.QUEUED, None
    job.message = f"requeued after attempt {job.attempts} of {attempts}: its worker stopped"
    return "requeued"


def max_attempts(kind: str) -> int:
    """Runs a job of ``kind`` may take: the kind's own bound, else ``JOBS_MAX_ATTEMPTS``."""
    spec = kind_find(kind)
    own = spec.max_attempts if spec is not None else None
    return own or settings.JOBS_MAX_ATTEMPTS


def _send_due(*, wait: float | None) -> int:
    """Send queued jobs never sent or sent long ago; stop at the first the broker refuses."""
    stale = timezone.now() - timedelta(seconds=settings.JOBS_REQUEUE_SECONDS)
    due = Job.objects.filter(Q(sent_at__isnull=True) | Q(sent_at__lt=stale),
                             status=JobStatus.QUEUED)
    sent = 0
    for job_id in due.order_by("pk").values_list("pk", flat=True)[:SWEEP_BATCH]:
        if not job_send(job_id=job_id, wait=wait):
            break  # the broker is down: the rest waits for the next sweep
        sent += 1
    return sent
