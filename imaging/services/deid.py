"""De-identified copies of stored instances (``imaging.dicom``), next to the originals."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from imaging.blobs import blob_get, blob_put
from imaging.models import Instance

logger = logging.getLogger(__name__)


# Instances per queued message: one message per request (a broker round trip costs more than
# the Python that stores an instance), small enough to stay well inside the task's time limit.
DEIDENTIFY_BATCH = 8


def deidentify_queue(instance_ids: list[int], *, wait: float | None = None) -> int:
    """Publish the copies' messages (after commit), mark the rows queued; how many were published.

    The row is the outbox (``Instance.deid_queued_at`` NULL until published), so a message that
    does not reach the broker is only late: ``deidentify_pending`` publishes it. The answer to
    the device or client therefore never waits on the broker for more than
    ``BROKER_PUBLISH_TIMEOUT`` seconds (``wait``: the sweep's own), see ``_BrokerGate``.
    """
    if not instance_ids:
        return 0
    limit = settings.BROKER_PUBLISH_TIMEOUT if wait is None else wait
    if not _GATE.send(_publish, instance_ids, wait=limit):
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


class _BrokerGate:
    """Publishes on a thread of its own and waits a bounded time; after a failure, not at all for a while.

    A paused or unreachable Redis accepts the TCP connection and never answers: kombu then
    blocks until its socket timeout (``BROKER_SOCKET_TIMEOUT``). Waiting for the publish only
    ``wait`` seconds keeps that off the answer; skipping the broker for
    ``BROKER_PUBLISH_BACKOFF_SECONDS`` after a failure keeps every later answer from paying
    even that, and logs one warning per outage instead of one per instance. Eager mode (tests)
    has no broker and runs the task where it is queued.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._pid, self._pool = 0, None
        self._closed_until, self._down = 0.0, False

    def send(self, publish: Callable[[list[int]], None], ids: list[int], *, wait: float) -> bool:
        """Run ``publish(ids)`` within ``wait`` seconds; False (logged once) when it failed or was skipped."""
        from imaging.tasks import deidentify_instance

        eager = deidentify_instance.app.conf.task_always_eager
        if not eager and time.monotonic() < self._closed_until:
            return False
        try:
            if eager:
                publish(ids)
            else:
                future = self._executor().submit(publish, ids)
                try:
                    future.result(timeout=wait)
                finally:
                    future.cancel()  # one not started yet never runs: its rows are the sweep's
        except Exception as error:  # noqa: BLE001 - the rows are committed; the sweep sends them
            self._failed(error)
            return False
        self._succeeded()
        return True

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pid != os.getpid() or self._pool is None:  # a forked child gets its own thread
                self._pid = os.getpid()
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-publish")
            return self._pool

    def _failed(self, error: BaseException) -> None:
        backoff = settings.BROKER_PUBLISH_BACKOFF_SECONDS
        with self._lock:
            self._closed_until = time.monotonic() + backoff
            first, self._down = not self._down, True
        if first:
            logger.warning("broker unreachable (%s): de-identification left to the sweep, publishing "
                           "paused for %gs at a time until it answers", type(error).__name__, backoff)

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            logger.info("broker reachable again: publishing de-identification after commit")


_GATE = _BrokerGate()
os.register_at_fork(after_in_child=_GATE._reset)

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
