"""imaging.deidentify_instance: a de-identified copy next to each stored instance, queued on commit."""

from __future__ import annotations

import hashlib
import io

import pydicom
import pytest

from config.celery import app
from imaging import services
from imaging.blobs import blob_get
from imaging.models import Instance
from imaging.reading import instance_read
from imaging.tasks import deidentify_instance
from tests.imaging.conftest import HOSPITAL, US_MULTIFRAME, US_PALETTE, dicom_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager():
    """Tasks run in this process when queued (the real task, without a broker round trip)."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def ingest(name: str) -> Instance:
    return services.instance_store(incoming=instance_read(dicom_bytes(name)), organization_id=HOSPITAL).instance


def test_ingest_queues_the_copy_after_commit(django_capture_on_commit_callbacks, eager):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        instance = ingest(US_PALETTE)

    assert len(callbacks) == 1
    row = Instance.objects.get(pk=instance.pk)
    copy = blob_get(key=row.deid_storage_key)
    assert row.deid_storage_key == row.storage_key.removesuffix(".dcm") + ".deid.dcm"
    assert row.deid_sha256 == hashlib.sha256(copy).hexdigest() and row.deidentified_at is not None
    original = pydicom.dcmread(io.BytesIO(dicom_bytes(US_PALETTE)))
    deidentified = pydicom.dcmread(io.BytesIO(copy))
    assert deidentified.PatientIdentityRemoved == "YES"
    assert deidentified.get("PatientName") != original.PatientName
    assert deidentified.SOPInstanceUID != original.SOPInstanceUID
    assert blob_get(key=row.storage_key) == dicom_bytes(US_PALETTE)  # the original is untouched


def test_running_the_task_twice_keeps_the_first_copy(settings):
    settings.IMAGING_DEIDENTIFY_ON_INGEST = False
    instance = ingest(US_MULTIFRAME)

    deidentify_instance.apply(args=[instance.pk]).get()
    first = Instance.objects.get(pk=instance.pk)
    deidentify_instance.apply(args=[instance.pk]).get()

    second = Instance.objects.get(pk=instance.pk)
    assert first.deid_sha256 and second.deid_sha256 == first.deid_sha256
    assert second.deidentified_at == first.deidentified_at


def test_nothing_is_queued_when_the_setting_is_off(settings, django_capture_on_commit_callbacks):
    settings.IMAGING_DEIDENTIFY_ON_INGEST = False

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        ingest(US_PALETTE)

    assert callbacks == []


def test_a_missing_instance_is_not_an_error():
    assert services.instance_deidentify(instance_id=987654321) is None


def test_the_sweep_finds_instances_still_without_a_copy(settings, eager):
    settings.IMAGING_DEIDENTIFY_ON_INGEST = False
    instance = ingest(US_PALETTE)

    pending = services.instances_deidentify_pending(older_than_seconds=0)
    deidentify_instance.apply(args=[instance.pk]).get()

    assert pending == [instance.pk]
    assert services.instances_deidentify_pending(older_than_seconds=0) == []
