"""imaging.deid_sweep: beat's de-identification sweep is a job, with progress and single-flight."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from imaging import services
from imaging.job_kinds import DEID_SWEEP, DEID_SWEEP_KEY
from imaging.models import Instance
from imaging.reading import instance_read
from imaging.tasks import deidentify_pending
from jobs.models import Job, JobStatus
from jobs.registry import kinds
from tests.imaging.conftest import HOSPITAL, US_MULTIFRAME, US_PALETTE, dicom_bytes
from tests.jobs.conftest import eager  # noqa: F401 - the fixture

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def dicom_folder(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tmp_path / "dicom", "allow_overwrite": True}}}
    settings.IMAGING_DEIDENTIFY_ON_INGEST = False
    settings.IMAGING_DEID_SWEEP_GRACE_SECONDS = 0
    services._ENDPOINTS_SEEN.clear()


def ingest(name: str) -> Instance:
    return services.instance_store(incoming=instance_read(dicom_bytes(name)), organization_id=HOSPITAL).instance


def test_the_sweep_kind_is_registered_by_the_imaging_app():
    assert DEID_SWEEP in kinds()


def test_beats_sweep_runs_as_a_job_and_reports_what_it_published(eager):
    stored = [ingest(US_PALETTE).pk, ingest(US_MULTIFRAME).pk]

    published = deidentify_pending()

    assert published == 2
    job = Job.objects.get(kind=DEID_SWEEP)
    assert job.status == JobStatus.SUCCEEDED and job.key == DEID_SWEEP_KEY
    assert (job.done, job.total, job.progress) == (2, 2, 1.0)
    assert job.result == {"pending": 2, "published": 2} and job.checkpoint == {"after_id": max(stored)}
    assert Instance.objects.filter(deid_storage_key="").count() == 0


def test_a_sweep_still_running_elsewhere_is_not_doubled(eager):
    ingest(US_PALETTE)
    Job.objects.create(kind=DEID_SWEEP, key=DEID_SWEEP_KEY, status=JobStatus.RUNNING, attempts=1,
                       lease_owner="another-worker", lease_expires=timezone.now() + timedelta(minutes=1))

    assert deidentify_pending() == 0
    assert Job.objects.filter(kind=DEID_SWEEP).count() == 1
    assert Instance.objects.filter(deid_storage_key="").count() == 1  # left for that sweep


def test_a_sweep_whose_worker_died_resumes_after_its_checkpoint(eager):
    first, second = ingest(US_PALETTE).pk, ingest(US_MULTIFRAME).pk
    Job.objects.create(kind=DEID_SWEEP, key=DEID_SWEEP_KEY, status=JobStatus.QUEUED, attempts=1,
                       checkpoint={"after_id": first}, message="requeued after attempt 1")

    assert deidentify_pending() == 1
    job = Job.objects.get(kind=DEID_SWEEP)
    assert job.status == JobStatus.SUCCEEDED and job.result == {"pending": 1, "published": 1}
    assert Instance.objects.get(pk=second).deid_storage_key
    assert not Instance.objects.get(pk=first).deid_storage_key  # the next sweep's
