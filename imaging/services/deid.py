"""De-identified copies of stored instances (``imaging.dicom``), next to the originals."""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from imaging.blobs import blob_get, blob_put
from imaging.models import Instance
from jobs.broker import BoundedPublisher

logger = logging.getLogger(__name__)


# Instances per queued message: one message per request (a broker round trip costs more than
# the Python that stores an instance), small enough to stay well inside the task's time limit.
DEIDENTIFY_BATCH = 8


def deidentify_queue(instance_ids: list[int], *, wait: float | None = None) -> int:
    """Publish the copies' messages (after commit), mark the rows queued; how many were published.

    The row is the outbox (``Instance.deid_queued_at`` NULL until published), so a message that
    does not reach the broker is only late: ``deidentify_pending`` publishes it. The answer to
    the device or client therefore never waits on the broker for more than
    ``BROKER_PUBLISH_TIMEOUT`` seconds (``wait``: the sweep's own), see ``jobs.broker``.
    """
    if not instance_ids:
        return 0
    limit = settings.BROKER_PUBLISH_TIMEOUT if wait is None else wait
    from imaging.tasks import deidentify_instance

    eager = deidentify_instance.app.conf.task_always_eager
    if not _GATE.send(lambda: _publish(instance_ids), wait=limit, eager=eager):
        return 0
    _mark_queued(instance_ids)
    return len(instance_ids)


def _publish(instance_ids: list[int]) -> None:
    """One message per ``DEIDENTIFY_BATCH`` instances; no retry here, the sweep is the retry."""
    from imaging.tasks import deidentify_instance, deidentify_instances

    for start in range(0, len(instance_ids), DEIDENTIFY_BATCH):
        batch = instance_ids[start:start + DEIDENTIFY_BATCH]
        if len(batch) == 1:
            deidentify_instance.apply_async(args=[batch[0]], retry=False)
        else:
            deidentify_instances.apply_async(args=[batch], retry=False)


# A paused or unreachable Redis must not hold up the device's or client's answer (jobs.broker).
_GATE = BoundedPublisher("de-identification", "broker-publish", logger)
os.register_at_fork(after_in_child=_GATE.reset)

# SKIP LOCKED: a row a worker is de-identifying right now is left unmarked (it is done or being
# done), so marking never waits for a worker's lock, nor the answer with it.
_MARK_QUEUED = ("UPDATE imaging_instance SET deid_queued_at = %s WHERE id IN (SELECT id FROM imaging_instance "
                "WHERE id = ANY(%s) AND deid_storage_key = '' FOR UPDATE SKIP LOCKED)")


def _mark_queued(instance_ids: list[int]) -> None:
    """Record that these rows' messages reached the broker, so the sweep leaves them alone."""
    try:
        with connection.cursor() as cursor:
            cursor.execute(_MARK_QUEUED, [timezone.now(), instance_ids])
    except DatabaseError as error:  # the sweep publishes them once more: the task is idempotent
        logger.warning("could not mark de-identification queued (%s)", type(error).__name__)


def instances_deidentify_pending(*, limit: int = 1000, older_than_seconds: float | None = None,
                                 requeue_after_seconds: float | None = None) -> list[int]:
    """Ids of the copies to publish again: never published, or published long ago and still not made.

    An instance without a copy (and not refused) whose message never reached the broker
    (``deid_queued_at`` NULL, stored more than ``IMAGING_DEID_SWEEP_GRACE_SECONDS`` ago: its own
    publish had its chance), or whose message was published more than
    ``IMAGING_DEID_REQUEUE_SECONDS`` ago (lost with the broker's data, or its retries
    exhausted). A copy queued twice is made once.
    """
    now = timezone.now()
    grace = settings.IMAGING_DEID_SWEEP_GRACE_SECONDS if older_than_seconds is None else older_than_seconds
    requeue = settings.IMAGING_DEID_REQUEUE_SECONDS if requeue_after_seconds is None else requeue_after_seconds
    due = (Q(deid_queued_at__isnull=True, created__lt=now - timedelta(seconds=grace))
           | Q(deid_queued_at__lt=now - timedelta(seconds=requeue)))
    return list(Instance.objects.filter(due, deid_storage_key="", deid_error="")
                .order_by("pk").values_list("pk", flat=True)[:limit])


class DeidentificationUnavailable(RuntimeError):
    """imaging.dicom (the de-identification module) is not installed on this node."""


def instance_deidentify(*, instance_id: int) -> Instance | None:
    """Make the de-identified copy of a stored instance next to it; safe to run twice.

    The copy is keyed with ``DEID_SECRET``. A file the de-identifier refuses is recorded in
    ``deid_error`` (no copy), not retried.
    """
    try:
        from imaging.dicom import DeidOptions, DicomRefused, deidentify_bytes
    except ImportError as error:
        raise DeidentificationUnavailable(str(error)) from None
    with transaction.atomic():
        instance = Instance.objects.select_for_update().filter(pk=instance_id).first()
        if instance is None or instance.deid_storage_key:
            return instance
        try:
            copy = deidentify_bytes(blob_get(key=instance.storage_key), key=settings.DEID_SECRET.encode(),
                                    options=DeidOptions(max_pixel_bytes=settings.DICOM_MAX_PIXEL_BYTES_PER_INSTANCE))
        except DicomRefused as error:
            instance.deid_error = str(error)[:300] or type(error).__name__
            instance.save(update_fields=["deid_error"])
            return instance
        key = instance.storage_key.removesuffix(".dcm") + ".deid.dcm"
        blob_put(key=key, data=copy)
        instance.deid_storage_key, instance.deid_sha256 = key, hashlib.sha256(copy).hexdigest()
        instance.deidentified_at, instance.deid_error = timezone.now(), ""
        instance.save(update_fields=["deid_storage_key", "deid_sha256", "deidentified_at", "deid_error"])
    return instance
