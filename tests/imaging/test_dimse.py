"""The DIMSE SCP: C-ECHO, C-STORE of pydicom's files with pynetdicom's SCU, over loopback."""

from __future__ import annotations

import json
import socket

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from ehr.models import Resource
from imaging.blobs import blob_get
from imaging.models import Instance, Study
from ledger.models import AuditEntry
from tests.imaging.conftest import (
    ALL_FILES,
    CALLING_AE,
    CT,
    HOSPITAL,
    US_JPEG2K,
    US_MULTIFRAME,
    US_RGB,
    dicom_dataset,
    stored_files,
    wait_idle,
)

SUCCESS, DUPLICATE, NOT_AUTHORIZED, CANNOT_UNDERSTAND = 0x0000, 0x0111, 0x0124, 0xC000


def associate(scp, datasets, *, calling_ae: str = CALLING_AE, called_ae: str = "CARRACK"):
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title=called_ae)
    assert assoc.is_established
    return assoc


def store(scp, datasets, **kwargs) -> list[int]:
    assoc = associate(scp, datasets, **kwargs)
    try:
        return [assoc.send_c_store(dataset).Status for dataset in datasets]
    finally:
        assoc.release()
        wait_idle(scp)


def test_c_echo_succeeds(scp):
    assoc = associate(scp, [])

    status = assoc.send_c_echo()

    assoc.release()
    assert status.Status == SUCCESS


def test_accepted_sockets_have_tcp_nodelay(scp):
    assoc = associate(scp, [])
    try:
        [server_side] = scp.active_associations
        sock = server_side.dul.socket.socket

        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        assoc.release()


def test_c_store_of_every_file_stores_rows_files_and_pixels(scp):
    datasets = [dicom_dataset(name) for name in ALL_FILES]

    statuses = store(scp, datasets)

    assert statuses == [SUCCESS] * len(datasets)
    assert Instance.objects.count() == 6 and Study.objects.count() == 5
    for dataset in datasets:
        row = Instance.objects.get(sop_instance_uid=dataset.SOPInstanceUID)
        stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(blob_get(key=row.storage_key)))
        assert stored.PixelData == dataset.PixelData
        assert stored.file_meta.TransferSyntaxUID == dataset.file_meta.TransferSyntaxUID
        assert row.study.organization_id == HOSPITAL


def test_each_c_store_is_audited_with_the_calling_ae_title(scp):
    before = AuditEntry.objects.count()

    store(scp, [dicom_dataset(CT), dicom_dataset(US_MULTIFRAME)])

    entries = list(AuditEntry.objects.order_by("id"))[before:]
    assert [entry.agent for entry in entries] == [f"urn:dicom:ae:{CALLING_AE}"] * 2
    events = [json.loads(entry.event) for entry in entries]
    assert {event["subtype"][0]["code"] for event in events} == {"create"}
    assert {event["outcome"] for event in events} == {"0"}
    study = Study.objects.get(study_instance_uid=dicom_dataset(CT).StudyInstanceUID)
    assert {"reference": f"ImagingStudy/{study.fhir_id}"} in [e.get("what") for e in events[0]["entity"]]


def test_the_imaging_study_is_written_when_the_association_ends(scp):
    store(scp, [dicom_dataset(US_JPEG2K), dicom_dataset(US_RGB)])

    study = Study.objects.get()
    imaging = json.loads(Resource.objects.get(resource_type="ImagingStudy", logical_id=study.fhir_id).text)
    assert imaging["numberOfInstances"] == 2 and imaging["numberOfSeries"] == 1
    assert imaging["meta"]["versionId"] == "1"  # one version per association, not per instance
    assert not study.fhir_stale


def test_storing_the_same_instance_again_is_idempotent(scp):
    store(scp, [dicom_dataset(CT)])
    row = Instance.objects.get()

    statuses = store(scp, [dicom_dataset(CT)])

    assert statuses == [SUCCESS]
    assert list(Instance.objects.values_list("pk", "content_sha256")) == [(row.pk, row.content_sha256)]


def test_different_content_under_a_stored_uid_is_reported_not_overwritten(scp):
    store(scp, [dicom_dataset(CT)])
    row = Instance.objects.get()
    original = blob_get(key=row.storage_key)
    changed = dicom_dataset(CT)
    changed.PatientName = "Someone^Else"

    statuses = store(scp, [changed])

    assert statuses == [DUPLICATE]
    assert blob_get(key=row.storage_key) == original
    assert Instance.objects.get().content_sha256 == row.content_sha256
    assert json.loads(AuditEntry.objects.order_by("-id").first().event)["outcome"] == "4"


def test_an_image_without_pixel_data_is_refused_and_nothing_is_stored(scp, dicom_folder):
    broken = dicom_dataset(CT)
    del broken.PixelData

    statuses = store(scp, [broken])

    assert statuses == [CANNOT_UNDERSTAND]
    assert not Instance.objects.exists() and not Study.objects.exists()
    assert not Resource.objects.filter(resource_type="Patient").exists()
    assert stored_files(dicom_folder) == []


def test_an_unsupported_sop_class_is_not_accepted_at_all(scp):
    rtplan = pydicom.dcmread(pydicom.data.get_testdata_file("rtplan.dcm"))
    assoc = associate(scp, [rtplan])
    try:
        with pytest.raises(ValueError, match="presentation context"):
            assoc.send_c_store(rtplan)
    finally:
        assoc.release()
        wait_idle(scp)

    assert not Instance.objects.exists()


def test_an_unmapped_calling_ae_is_refused_when_there_is_no_default(scp):
    statuses = store(scp, [dicom_dataset(CT)], calling_ae="STRANGER")

    assert statuses == [NOT_AUTHORIZED]
    assert not Instance.objects.exists()
    entry = AuditEntry.objects.order_by("-id").first()
    assert entry.agent == "urn:dicom:ae:STRANGER" and entry.outcome == "4"


def test_the_wrong_called_ae_title_is_rejected(scp):
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)

    assoc = ae.associate("127.0.0.1", scp.port, ae_title="SOMEONE")

    assert assoc.is_rejected


def test_an_instance_sent_by_stow_and_then_by_c_store_is_stored_once(scp, web):
    web.store_instances(datasets=[dicom_dataset(US_MULTIFRAME)])

    statuses = store(scp, [dicom_dataset(US_MULTIFRAME)])

    assert statuses == [SUCCESS]
    assert Instance.objects.count() == 1


def test_a_new_study_from_the_same_patient_reuses_the_patient(scp):
    first = dicom_dataset(CT)
    second = dicom_dataset(CT)
    second.StudyInstanceUID, second.SeriesInstanceUID = generate_uid(), generate_uid()
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = generate_uid()

    store(scp, [first, second])

    assert Study.objects.count() == 2
    assert Resource.objects.filter(resource_type="Patient").count() == 1
    assert Resource.objects.filter(resource_type="ImagingStudy").count() == 2
