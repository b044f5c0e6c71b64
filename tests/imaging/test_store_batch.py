"""STOW-RS requests of many instances: one transaction, rows in two round trips, durable files.

What a request mixing new and stored studies, series and instances writes, what it refuses,
that its ImagingStudies list every instance, that its files are fsynced before the rows
naming them commit, that its de-identified copies are queued in one message, and that
concurrent requests for one new patient create it once.
"""

from __future__ import annotations

import copy
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pydicom
import pytest
from pydicom.uid import generate_uid

from access.models import Role
from ehr.models import Resource
from imaging import blobs
from imaging.models import Instance, Series, Study
from ledger.models import AuditEntry
from tests.imaging.conftest import (
    CT,
    HOSPITAL,
    MR,
    US_JPEG2K,
    US_RGB,
    dicom_dataset,
    encoded,
    role_token,
)
from tests.imaging.test_dicomweb_access import stow

pytestmark = pytest.mark.django_db
FAILED, REFERENCED, REASON = "00081198", "00081199", "00081197"


@pytest.fixture
def token(db) -> str:
    return role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)


def copy_of(name: str, **uids: str) -> pydicom.Dataset:
    """A pydicom test file with a fresh SOP Instance UID and, when given, other UIDs."""
    dataset = dicom_dataset(name)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    for keyword, value in uids.items():
        setattr(dataset, keyword, value)
    return dataset


def imaging_study(study: Study) -> dict:
    return json.loads(Resource.objects.get(resource_type="ImagingStudy", logical_id=study.fhir_id).text)


def test_one_request_adds_to_a_stored_study_and_creates_another(client, token):
    first = copy_of(US_JPEG2K)
    assert stow(client, token, encoded(first)).status_code == 200
    stored = Study.objects.get()
    version = imaging_study(stored)["meta"]["versionId"]
    same_series = copy_of(US_RGB, StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=first.SeriesInstanceUID)
    new_series = copy_of(CT, StudyInstanceUID=first.StudyInstanceUID, SeriesInstanceUID=generate_uid(),
                         PatientID=first.PatientID)
    other_study = copy_of(MR, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())

    response = stow(client, token, encoded(same_series), encoded(new_series), encoded(other_study))

    assert response.status_code == 200
    assert len(response.json()[REFERENCED]["Value"]) == 3
    stored.refresh_from_db()
    assert stored.modalities == ["CT", "US"]  # the new series' modality joins the study's
    resource = imaging_study(stored)
    assert int(resource["meta"]["versionId"]) == int(version) + 1  # one new version for the request
    assert resource["numberOfSeries"] == 2 and resource["numberOfInstances"] == 3
    assert {item["uid"] for series in resource["series"] for item in series["instance"]} == {
        first.SOPInstanceUID, same_series.SOPInstanceUID, new_series.SOPInstanceUID}
    created = Study.objects.get(study_instance_uid=other_study.StudyInstanceUID)
    assert imaging_study(created)["numberOfInstances"] == 1
    assert not Study.objects.filter(fhir_stale=True).exists()
    assert Instance.objects.count() == 4 and Series.objects.count() == 3


def test_a_series_stored_under_another_study_is_refused_and_only_its_instance(client, token, dicom_folder):
    first = copy_of(CT)
    assert stow(client, token, encoded(first)).status_code == 200
    moved = copy_of(CT, StudyInstanceUID=generate_uid())  # the stored series, claimed by a new study
    fine = copy_of(MR, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid())

    response = stow(client, token, encoded(moved), encoded(fine))

    assert response.status_code == 202
    [failure] = response.json()[FAILED]["Value"]
    assert failure[REASON]["Value"] == [0x0110]
    assert failure["00081155"]["Value"] == [moved.SOPInstanceUID]
    assert not Study.objects.filter(study_instance_uid=moved.StudyInstanceUID).exists()  # no empty study
    assert Study.objects.count() == 2 and Instance.objects.count() == 2
    assert len(list(dicom_folder.glob("**/*.dcm"))) == 2


def test_one_uid_twice_in_a_request_is_stored_once_or_refused_when_different(client, token):
    dataset = copy_of(CT)
    changed = copy.deepcopy(dataset)
    changed.PatientWeight = "71"

    response = stow(client, token, encoded(dataset), encoded(dataset), encoded(changed))

    assert response.status_code == 202
    assert len(response.json()[REFERENCED]["Value"]) == 2
    assert [item[REASON]["Value"] for item in response.json()[FAILED]["Value"]] == [[0x0111]]
    assert Instance.objects.count() == 1


def test_a_refused_request_stores_nothing_and_is_audited_once(client, token, dicom_folder):
    before = AuditEntry.objects.count()

    good = stow(client, token, encoded(copy_of(CT)))
    refused = client.post("/dicomweb/studies", b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n",
                          content_type='multipart/related; type="application/dicom"; boundary=x',
                          HTTP_AUTHORIZATION=f"Bearer {token}")

    assert good.status_code == 200 and refused.status_code == 415
    assert AuditEntry.objects.count() == before + 2
    assert json.loads(AuditEntry.objects.order_by("-id").first().event)["outcome"] != "0"
    assert Instance.objects.count() == 1


def test_files_and_their_new_folders_are_fsynced_before_the_rows_commit(client, token, dicom_folder, monkeypatch):
    from django.db import connection

    synced: list[str] = []
    real_fsync, real_wait = os.fsync, blobs.PendingWrites.wait
    outside = len(connection.atomic_blocks)

    def fsync(descriptor: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    def wait(self) -> None:
        # Inside the request's transaction and the store's: nothing is committed before the files are durable.
        assert len(connection.atomic_blocks) >= outside + 2
        real_wait(self)
        synced.append("waited")

    monkeypatch.setattr(blobs.os, "fsync", fsync)
    monkeypatch.setattr(blobs.PendingWrites, "wait", wait)
    study = generate_uid()
    parts = [encoded(copy_of(CT, StudyInstanceUID=study)), encoded(copy_of(MR, StudyInstanceUID=study))]

    assert stow(client, token, *parts).status_code == 200

    files = sorted(str(path) for path in dicom_folder.glob("**/*.dcm"))
    assert len(files) == 2 and set(files) <= set(synced)
    new_folders = {str(dicom_folder / HOSPITAL / study), str(dicom_folder / HOSPITAL), str(dicom_folder)}
    assert new_folders <= set(synced[:synced.index("waited")])


def test_the_copies_of_a_request_are_queued_in_one_message(client, token, settings, monkeypatch,
                                                           django_capture_on_commit_callbacks):
    from imaging import tasks

    settings.IMAGING_DEIDENTIFY_ON_INGEST = True
    sent = []
    monkeypatch.setattr(tasks.deidentify_instances, "apply_async", lambda args, **kw: sent.append(("batch", args)))
    monkeypatch.setattr(tasks.deidentify_instance, "apply_async", lambda args, **kw: sent.append(("one", args)))

    with django_capture_on_commit_callbacks(execute=True):
        stow(client, token, *(encoded(copy_of(name)) for name in (CT, MR, US_RGB)))

    assert sent == [("batch", [sorted(Instance.objects.values_list("pk", flat=True))])]


def test_the_batch_task_makes_every_copy(settings):
    from imaging import services
    from imaging.reading import instance_read
    from imaging.tasks import deidentify_instances

    settings.IMAGING_DEIDENTIFY_ON_INGEST = False
    results = services.instances_store(incoming=[instance_read(encoded(copy_of(name))) for name in (CT, MR)],
                                       organization_id=HOSPITAL)

    deidentify_instances.apply(args=[[result.instance.pk for result in results]]).get()

    assert Instance.objects.filter(deid_storage_key="").count() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_for_one_new_patient_create_it_once(live_server):
    from tests.imaging.conftest import dicomweb

    web = dicomweb(live_server, role_token("int-b", Role.INTEGRATION, organization=HOSPITAL))
    barrier = threading.Barrier(4)

    def send(index: int) -> None:
        dataset = copy_of(CT, StudyInstanceUID=generate_uid(), SeriesInstanceUID=generate_uid(),
                          PatientID="RACE-1")
        barrier.wait()
        web.store_instances(datasets=[dataset])

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(send, range(4)))

    assert Study.objects.count() == 4
    assert Resource.objects.filter(resource_type="Patient").count() == 1
    assert len(set(Study.objects.values_list("patient_id", flat=True))) == 1
