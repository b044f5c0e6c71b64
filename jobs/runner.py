"""Running one job: claim the row, hand the handler a ``JobContext``, record how it ended.

The claim is one UPDATE of a queued row, so two messages for one job run it once. While it
runs, the worker holds a lease (``lease_owner``, ``lease_expires``) that ``JobContext``
renews on each progress, checkpoint or heartbeat; a worker that dies stops renewing it, and
``jobs.sweep`` queues the job again, to resume from its last checkpoint. A cancel request is
seen at the same moments and stops the handler by raising ``JobCancelled`` there.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Job, JobStatus
from .registry import kind_find
from .services import max_attempts

logger = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside the handler when its starter cancelled the job: the handler just lets it go."""


class LeaseLost(Exception):
    """The row is no longer this run's (the sweep requeued it): stop without writing anything."""


class JobContext:
    """What a handler sees of its job: params, the checkpoint to resume from, and how to report."""

    def __init__(self, job: Job, *, worker: str) -> None:
        self.job_id, self.kind, self.worker = job.pk, job.kind, worker
        self.params: dict[str, Any] = job.params or {}
        self.resumed_from: Any = job.checkpoint  # None on a first run
        self.attempt = job.attempts

    def progress(self, done: int, total: int | None = None, *, message: str | None = None) -> None:
        """Record how far it got (per batch, not per item); renews the lease, stops on cancel."""
        fields: dict[str, Any] = {"done": done}
        if total is not None:
            fields["total"] = total
        if message is not None:
            fields["message"] = message[:300]
        self._write(fields)

    def checkpoint(self, value: Any) -> None:
        """Save where to resume (JSON); a run after a dead worker starts from the latest one."""
        self._write({"checkpoint": value})

    def heartbeat(self) -> None:
        """Renew the lease during a long step that reports nothing; stops on cancel."""
        self._write({})

    def _write(self, fields: dict[str, Any]) -> None:
        now = timezone.now()
        lease = now + timedelta(seconds=settings.JOBS_LEASE_SECONDS)
        with transaction.atomic():
            mine = Job.objects.filter(pk=self.job_id, status=JobStatus.RUNNING,
                                      lease_owner=self.worker)
            if not mine.update(heartbeat=now, lease_expires=lease, **fields):
                raise LeaseLost(self.job_id)
            cancel = mine.values_list("cancel_requested", flat=True).first()
        if cancel:
            raise JobCancelled(self.job_id)


def worker_name() -> str:
    """This run's lease owner: host, process and a nonce (a rerun on one worker is another run)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:200]


def job_run(*, job_id: int) -> Job | None:
    """Run a queued job here; None if it is not queued (running elsewhere, finished, cancelled)."""
    worker = worker_name()
    job = _claim(job_id=job_id, worker=worker)
    if job is None:
        return None
    spec = kind_find(job.kind)
    if spec is None:
        return _finish(job, worker, JobStatus.FAILED, message=f"no handler for job kind {job.kind}")
    context = JobContext(job, worker=worker)
    try:
        result = spec.handler(context)
    except JobCancelled:
        return _finish(job, worker, JobStatus.CANCELLED, message="cancelled")
    except LeaseLost:
        logger.warning("job %s #%s: lease lost to the sweep; this run stops", job.kind, job.pk)
        return None
    except Exception as error:  # noqa: BLE001 - a soft time limit too: the row must say it failed
        return _failed(job, worker, error, retry=isinstance(error, spec.retry_on))
    return _finish(job, worker, JobStatus.SUCCEEDED, result=result, message="done")


def _claim(*, job_id: int, worker: str) -> Job | None:
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, lease_owner=worker, heartbeat=now,
        lease_expires=now + timedelta(seconds=settings.JOBS_LEASE_SECONDS),
        attempts=F("attempts") + 1, started=Coalesce(F("started"), now))
    return Job.objects.get(pk=job_id) if claimed else None


def _failed(job: Job, worker: str, error: BaseException, *, retry: bool) -> Job | None:
    """The error's class only (its message may quote data); requeued while attempts remain."""
    logger.error("job %s #%s failed (%s)", job.kind, job.pk, type(error).__name__)
    logger.debug("job %s #%s: traceback", job.kind, job.pk, exc_info=error)
    if retry and job.attempts < max_attempts(job.kind):
        Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_owner=worker).update(
            status=JobStatus.QUEUED, sent_at=None, lease_owner="", lease_expires=None,
            message=f"requeued after attempt {job.attempts}: {type(error).__name__}")
        return Job.objects.get(pk=job.pk)
    return _finish(job, worker, JobStatus.FAILED, message=f"failed: {type(error).__name__}")


def _finish(job: Job, worker: str, status: str, *, message: str, result: Any = None) -> Job | None:
    """Record the end, if the row is still this run's (a requeued row belongs to the next run)."""
    fields: dict[str, Any] = {"status": status, "finished": timezone.now(),
                              "message": message[:300], "lease_owner": "", "lease_expires": None}
    if status == JobStatus.SUCCEEDED:
        fields.update(result=result, done=Coalesce(F("total"), F("done")))
    mine = Job.objects.filter(pk=job.pk, status=JobStatus.RUNNING, lease_owner=worker)
    if not mine.update(**fields):
        return None
    return Job.objects.get(pk=job.pk)
