"""De-identified copies of stored instances (``imaging.dicom``), next to the originals."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from imaging.blobs import blob_get, blob_put
from imaging.models import Instance

logger = logging.getLogger(__name__)


# Instances per queued message: one message per request (a broker round trip costs more than
# the Python that stores an instance), small enough to stay well inside the task's time limit.
DEIDENTIFY_BATCH = 8


def deidentify_queue(instance_ids: list[int]) -> None:
    """Queue the copies (after commit); a broker outage is logged, ``deidentify_pending`` catches up."""
    from imaging.tasks import deidentify_instance, deidentify_instances

    try:
        for start in range(0, len(instance_ids), DEIDENTIFY_BATCH):
            batch = instance_ids[start:start + DEIDENTIFY_BATCH]
            if len(batch) == 1:
                deidentify_instance.apply_async(args=[batch[0]], retry=False)
            else:
                deidentify_instances.apply_async(args=[batch], retry=False)
    except Exception as error:  # noqa: BLE001 - storing succeeded; the copy is made later
        logger.warning("could not queue de-identification (%s); the sweep will", type(error).__name__)


def instances_deidentify_pending(*, limit: int = 1000, older_than_seconds: int = 300) -> list[int]:
    """Ids of stored instances that still lack a de-identified copy (and were not refused).

    The ``imaging.deidentify_pending`` sweep queues them again: a copy missed while the broker
    was down is made later, and a queued copy that already exists is a no-op.
    """
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return list(Instance.objects.filter(deid_storage_key="", deid_error="", created__lt=cutoff)
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
