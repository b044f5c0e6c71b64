"""Issue 11, imaging: decompression bombs, AE titles as agents, unknown AEs, existence oracles.

UIDs are per organization: a UID another hospital holds is stored as a fresh one, with the
same answer on both doors, so a store tells nothing about what other hospitals hold.

Each attack is replayed through the real door (pynetdicom's SCU against the SCP, Django's
test client on /dicomweb/, real PostgreSQL) and each test checks the refusal, that nothing was
written, and what the audit entry says.
"""

from __future__ import annotations

import json
import logging
import tracemalloc

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from ehr.models import Resource
from imaging import services
from imaging.blobs import blob_get
from imaging.models import Instance, Study
from imaging.reading import instance_read
from tests.imaging.conftest import (  # noqa: F401 - fixtures: a folder per test, Endpoints forgotten
    CT,
    MR,
    REFERENCED,
    US_JPEG2K,
    assert_nothing_stored,
    dicom_bytes,
    dicom_dataset,
    dicom_folder,
    encoded,
    forget_endpoints,
    reasons,
    scp_serving,
    stored_files,
    wait_idle,
)
from tests.imaging.test_dicomweb_access import stow
from tests.security.conftest import HOSPITAL_A, HOSPITAL_B, audit_entries_since, hospital, last_audit_pk
from tests.test_settings import import_production

OUT_OF_RESOURCES, NOT_AUTHORIZED = 0xA700, 0x0124
AE_OF_A, AE_OF_B = "US_ROOM_A", "US_ROOM_B"
PATIENT_NAME = "Secret^Patient"


# --- fixtures and helpers -----------------------------------------------------------------------

@pytest.fixture
def scp(transactional_db, settings):
    """The SCP in this process; AE_OF_A belongs to hospital A, no default organization."""
    yield from scp_serving(settings, {AE_OF_A: HOSPITAL_A})


def c_store(scp, dataset: Dataset, *, calling_ae: str = AE_OF_A) -> int:
    return c_store_answer(scp, dataset, calling_ae=calling_ae).Status


def c_store_answer(scp, dataset: Dataset, *, calling_ae: str = AE_OF_A) -> Dataset:
    """The whole C-STORE response status (Status and any comment), once the association is over."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CARRACK")
    assert assoc.is_established
    try:
        return assoc.send_c_store(dataset)
    finally:
        assoc.release()
        wait_idle(scp)


def fresh(dataset: Dataset, *, study: bool = True) -> Dataset:
    """The same file as a new instance (and by default a new study and series)."""
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if study:
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.PatientName = PATIENT_NAME
    return dataset


def bomb(rows: int = 30000, columns: int = 30000, bits: int = 16) -> Dataset:
    """pydicom's ~150 KB JPEG 2000 ultrasound declaring rows × columns × 3 samples of ``bits``."""
    dataset = fresh(dicom_dataset(US_JPEG2K))
    dataset.Rows, dataset.Columns = rows, columns
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
    return dataset


def with_regions(dataset: Dataset) -> Dataset:
    """An ultrasound region over the whole image, so de-identification cleans its pixels."""
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = dataset.Columns - 1, dataset.Rows - 1
    dataset.SequenceOfUltrasoundRegions = Sequence([region])
    return dataset


def auth(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def instance_path(row: Instance) -> str:
    return (f"/dicomweb/studies/{row.study.study_instance_uid}/series/{row.series.series_instance_uid}"
            f"/instances/{row.sop_instance_uid}")


def store_as(organization: str, dataset: Dataset) -> Instance:
    outcome = services.instance_store(incoming=instance_read(encoded(dataset)), organization_id=organization)
    services.study_sync_fhir(study_ids=[outcome.study.pk])
    return Instance.objects.select_related("study", "series").get(pk=outcome.instance.pk)


# --- 1. decompression bombs ---------------------------------------------------------------------

def test_c_store_of_a_pixel_bomb_is_refused_out_of_resources_and_leaves_nothing(scp, dicom_folder):
    before = last_audit_pk()

    status = c_store(scp, bomb())

    assert status == OUT_OF_RESOURCES
    assert_nothing_stored(dicom_folder)
    [entry] = audit_entries_since(before)
    event = json.loads(entry.event)
    assert entry.outcome == "4" and "limit per instance" in event["outcomeDesc"]
    assert PATIENT_NAME not in entry.event


def test_stow_of_a_pixel_bomb_fails_a700_and_leaves_nothing(hospital_a, client, dicom_folder):
    before = last_audit_pk()

    response = stow(client, hospital_a.integration_token, encoded(bomb()))

    assert response.status_code == 409
    assert reasons(response) == [OUT_OF_RESOURCES]
    assert REFERENCED not in response.json()
    assert_nothing_stored(dicom_folder)
    [entry] = audit_entries_since(before)
    assert entry.outcome == "4"


def test_a_bomb_among_good_instances_is_refused_alone(hospital_a, client, dicom_folder):
    response = stow(client, hospital_a.integration_token, dicom_bytes(CT), encoded(bomb()))

    assert response.status_code == 202
    assert reasons(response) == [OUT_OF_RESOURCES]
    assert Instance.objects.count() == 1 and len(stored_files(dicom_folder)) == 1


def test_stow_whose_instances_together_exceed_the_request_limit_is_413(hospital_a, client, dicom_folder):
    parts = [encoded(bomb(15000, 15000, 8)) for _ in range(4)]  # 675 MB each: under 1 GiB, 2.7 GB together
    before = last_audit_pk()

    response = stow(client, hospital_a.integration_token, *parts)

    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert_nothing_stored(dicom_folder)
    [entry] = audit_entries_since(before)
    assert entry.outcome == "4"


def test_an_instance_above_the_limit_is_never_decoded(hospital_a, client, settings, dicom_folder):
    """An instance stored before the limit (or under a higher one): rendering, frames and
    de-identification refuse it rather than decode it."""
    row = store_as(HOSPITAL_A, with_regions(fresh(dicom_dataset(US_JPEG2K))))
    settings.DICOM_MAX_PIXEL_BYTES_PER_INSTANCE = 100_000  # the file declares 640 × 480 × 3

    rendered = client.get(f"{instance_path(row)}/rendered", **auth(hospital_a.integration_token))
    frames = client.get(f"{instance_path(row)}/frames/1", HTTP_ACCEPT="multipart/related; "
                        "type=application/octet-stream", **auth(hospital_a.integration_token))
    copy = services.instance_deidentify(instance_id=row.pk)

    assert rendered.status_code == 413 and frames.status_code == 413
    assert copy.deid_storage_key == "" and "limit" in copy.deid_error
    assert not list(dicom_folder.glob("**/*.deid.dcm"))


def test_a_frame_whose_codestream_is_larger_than_the_image_is_not_decoded(hospital_a, client, dicom_folder):
    """Rows × Columns say 16 × 16 (under every limit); the JPEG 2000 codestream says 640 × 480."""
    dataset = fresh(dicom_dataset(US_JPEG2K))
    dataset.Rows = dataset.Columns = 16
    row = store_as(HOSPITAL_A, with_regions(dataset))

    rendered = client.get(f"{instance_path(row)}/rendered", **auth(hospital_a.integration_token))
    copy = services.instance_deidentify(instance_id=row.pk)

    assert rendered.status_code == 413
    assert "another size" in rendered.json()["errorMessage"]
    assert copy.deid_storage_key == "" and "another size" in copy.deid_error


def test_rendering_a_large_frame_holds_about_one_frame_in_memory(hospital_a, client):
    """A 16-bit 2000 × 2000 CT-like frame with rescale and window: no float64 copies of it."""
    dataset = fresh(dicom_dataset(CT))
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.Rows = dataset.Columns = 2000
    dataset.PixelData = np.random.default_rng(1).integers(0, 4000, (2000, 2000), dtype=np.int16).tobytes()
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, -1024
    dataset.WindowCenter, dataset.WindowWidth = 40, 400
    row = store_as(HOSPITAL_A, dataset)
    frame_bytes = 2000 * 2000 * 2
    blob_get(key=row.storage_key)  # warm the storage backend outside the measurement

    tracemalloc.start()
    try:
        response = client.get(f"{instance_path(row)}/rendered", HTTP_ACCEPT="image/png",
                              **auth(hospital_a.integration_token))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    # The file is held a few times (blob, parsed data set, decoded frame) plus the 8-bit image;
    # the whole-frame float64 steps it replaced peaked at about 17 frames.
    assert peak < 7 * frame_bytes


# --- 2. an AE title is a device, never a user ---------------------------------------------------

def test_an_ae_titled_like_a_user_is_audited_as_a_device(scp, settings):
    get_user_model().objects.create_user("demo", password=None)
    settings.DICOM_AE_ORGANIZATIONS = {"demo": HOSPITAL_A}
    before = last_audit_pk()

    status = c_store(scp, fresh(dicom_dataset(CT)), calling_ae="demo")

    assert status == 0x0000
    [entry] = audit_entries_since(before)
    assert entry.agent == "urn:dicom:ae:demo"
    assert not get_user_model().objects.filter(username=entry.agent).exists()
    requestor = next(agent for agent in json.loads(entry.event)["agent"] if agent["requestor"])
    assert requestor["who"] == {"type": "Device", "identifier": {"value": "urn:dicom:ae:demo"}}
    assert requestor["type"]["coding"][0]["code"] == "110153"  # DCM Source Role ID, not a user role


# --- 3. unknown AE titles -----------------------------------------------------------------------

def test_an_unknown_ae_is_refused_and_logged_at_warning(scp, caplog, dicom_folder):
    before = last_audit_pk()

    with caplog.at_level(logging.WARNING, logger="imaging.dimse"):
        status = c_store(scp, fresh(dicom_dataset(CT)), calling_ae="STRANGER")

    assert status == NOT_AUTHORIZED
    assert_nothing_stored(dicom_folder)
    [warning] = [r for r in caplog.records if r.name == "imaging.dimse" and r.levelno == logging.WARNING]
    assert "'STRANGER'" in warning.getMessage() and "refused" in warning.getMessage()
    assert PATIENT_NAME not in caplog.text and "1CT1" not in caplog.text  # no patient data
    [entry] = audit_entries_since(before)
    assert entry.agent == "urn:dicom:ae:STRANGER" and entry.outcome == "4"


def test_the_local_default_organization_logs_every_unknown_ae(scp, settings, caplog):
    settings.DICOM_DEFAULT_ORGANIZATION = HOSPITAL_A  # as local settings have it (demo-hospital)

    with caplog.at_level(logging.WARNING, logger="imaging.dimse"):
        statuses = [c_store(scp, fresh(dicom_dataset(CT)), calling_ae="STRANGER") for _ in range(2)]

    assert statuses == [0x0000, 0x0000]
    warnings = [r.getMessage() for r in caplog.records if r.name == "imaging.dimse" and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(HOSPITAL_A in message for message in warnings)


def test_base_settings_have_no_default_organization_and_production_refuses_one(settings):
    from config.settings import base

    assert base.DICOM_DEFAULT_ORGANIZATION == ""
    result = import_production(DEID_SECRET="d" * 40, DICOM_DEFAULT_ORGANIZATION="demo-hospital")
    assert result.returncode != 0 and "DICOM_DEFAULT_ORGANIZATION must be empty" in result.stderr


# --- 4. a UID another hospital stored -----------------------------------------------------------

def test_a_uid_stored_by_another_hospital_is_never_overwritten_or_attached(hospital_b, client, dicom_folder):
    """Hospital B sends an instance whose UIDs hospital A stored, with other content: B's own copy."""
    row_of_a = store_as(HOSPITAL_A, dicom_dataset(CT))
    file_of_a = blob_get(key=row_of_a.storage_key)
    records_of_a = sorted(Resource.objects.filter(organization_id=HOSPITAL_A).values_list("pk", "version_id"))
    changed = dicom_dataset(CT)
    changed.PatientName, changed.PatientID = "Intruder^Bob", "B-1"
    new_in_study = fresh(dicom_dataset(CT), study=False)  # a new instance of A's study

    response = stow(client, hospital_b.integration_token, encoded(changed), encoded(new_in_study))

    assert response.status_code == 200 and reasons(response) == []  # not 0x0111, not 0x0124
    of_a, of_b = Study.objects.get(organization_id=HOSPITAL_A), Study.objects.get(organization_id=HOSPITAL_B)
    assert of_a.pk == row_of_a.study.pk and of_b.study_instance_uid == of_a.study_instance_uid
    assert list(of_a.instances.all()) == [row_of_a] and of_b.instances.count() == 2
    assert blob_get(key=row_of_a.storage_key) == file_of_a
    assert of_b.patient_id != of_a.patient_id and of_b.fhir_id != of_a.fhir_id
    assert Resource.objects.get(resource_type="Patient", logical_id=of_b.patient_id).organization_id == HOSPITAL_B
    assert sorted(Resource.objects.filter(organization_id=HOSPITAL_A).values_list("pk", "version_id")) == records_of_a
    message = json.dumps(response.json())
    assert HOSPITAL_A not in message and row_of_a.study.patient_id not in message and of_a.fhir_id not in message


def normalized(answer: str, *uid_sets: tuple[str, str, str]) -> str:
    """An answer with each (study, series, SOP) UID replaced by its role, to compare two answers."""
    for uids in uid_sets:
        for uid, name in sorted(zip(uids, ("STUDY", "SERIES", "SOP")), key=lambda pair: -len(pair[0])):
            answer = answer.replace(uid, name)
    return answer


def uids_of(dataset: Dataset) -> tuple[str, str, str]:
    return str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID), str(dataset.SOPInstanceUID)


@pytest.mark.parametrize("same_bytes", [True, False], ids=["same-bytes", "other-content"])
def test_stow_of_a_uid_another_hospital_holds_answers_exactly_as_a_fresh_uid(hospital_b, client, dicom_folder,
                                                                          same_bytes):
    row_of_a = store_as(HOSPITAL_A, dicom_dataset(CT))
    file_of_a = blob_get(key=row_of_a.storage_key)
    taken = dicom_dataset(CT)
    if not same_bytes:
        taken.PatientName = "Bravo^Bea"
    unused = fresh(dicom_dataset(CT))
    unused.PatientName = taken.PatientName
    before = last_audit_pk()

    answers = [stow(client, hospital_b.integration_token, encoded(dataset)) for dataset in (taken, unused)]

    texts = [normalized(answer.content.decode(), uids_of(dataset))
             for answer, dataset in zip(answers, (taken, unused))]
    assert [answer.status_code for answer in answers] == [200, 200] and texts[0] == texts[1]
    assert answers[0]["Content-Type"] == answers[1]["Content-Type"]
    copy_of_b = Instance.objects.select_related("study").get(organization_id=HOSPITAL_B,
                                                             sop_instance_uid=row_of_a.sop_instance_uid)
    assert copy_of_b.pk != row_of_a.pk and copy_of_b.storage_key != row_of_a.storage_key
    assert blob_get(key=copy_of_b.storage_key) == encoded(taken)
    assert blob_get(key=row_of_a.storage_key) == file_of_a
    assert Instance.objects.get(pk=row_of_a.pk).study_id == row_of_a.study_id
    create = audit_entries_since(before)[0]
    assert create.outcome == "0" and f"ImagingStudy/{copy_of_b.study.fhir_id}" in create.event
    assert row_of_a.study.fhir_id not in create.event and row_of_a.study.patient_id not in create.event


def test_c_store_of_a_uid_another_hospital_holds_answers_exactly_as_a_fresh_uid(scp, settings, client):
    settings.DICOM_AE_ORGANIZATIONS = {AE_OF_A: HOSPITAL_A, AE_OF_B: HOSPITAL_B}
    original = dicom_dataset(CT)
    assert c_store(scp, original, calling_ae=AE_OF_A) == 0x0000
    row_of_a = Instance.objects.select_related("study").get()
    file_of_a = blob_get(key=row_of_a.storage_key)
    taken, unused = dicom_dataset(CT), fresh(dicom_dataset(CT))
    taken.PatientName = unused.PatientName = "Bravo^Bea"
    before = last_audit_pk()

    answers = [c_store_answer(scp, dataset, calling_ae=AE_OF_B) for dataset in (taken, unused)]

    assert [answer.Status for answer in answers] == [0x0000, 0x0000]
    assert [(e.tag, e.value) for e in answers[0]] == [(e.tag, e.value) for e in answers[1]]
    copy_of_b = Instance.objects.select_related("study").get(organization_id=HOSPITAL_B,
                                                             sop_instance_uid=row_of_a.sop_instance_uid)
    assert copy_of_b.study.study_instance_uid == row_of_a.study.study_instance_uid
    assert copy_of_b.study_id != row_of_a.study_id and copy_of_b.study.patient_id != row_of_a.study.patient_id
    assert blob_get(key=row_of_a.storage_key) == file_of_a
    assert Instance.objects.filter(study=row_of_a.study).count() == 1
    entry = audit_entries_since(before)[0]
    assert entry.agent == f"urn:dicom:ae:{AE_OF_B}" and entry.outcome == "0"
    assert f"ImagingStudy/{copy_of_b.study.fhir_id}" in entry.event and row_of_a.study.fhir_id not in entry.event
    # Each hospital reads its own copy only, by the same UIDs.
    for organization, row in ((HOSPITAL_A, row_of_a), (HOSPITAL_B, copy_of_b)):
        token = hospital(client, organization).integration_token
        found = client.get(f"/dicomweb/studies?StudyInstanceUID={row.study.study_instance_uid}"
                           "&includefield=PatientName", **auth(token))
        read = client.get(instance_path(row_of_a), **auth(token))
        assert [item["00100010"]["Value"][0]["Alphabetic"] for item in found.json()] == [pydicom_name(row)]
        assert b"".join(read.streaming_content).count(blob_get(key=row.storage_key)) == 1


def pydicom_name(row: Instance) -> str:
    """The patient name in the stored file, as pydicom reads it."""
    return str(dcmread(DicomBytesIO(blob_get(key=row.storage_key))).PatientName)


def test_each_hospital_reads_only_its_own_copy_of_one_uid(hospital_a, hospital_b, client):
    row_of_a = store_as(HOSPITAL_A, dicom_dataset(CT))
    theirs = dicom_dataset(CT)
    theirs.PatientName = "Bravo^Bea"
    row_of_b = store_as(HOSPITAL_B, theirs)
    path = instance_path(row_of_a)
    assert path == instance_path(row_of_b)

    for owner, row, other in ((hospital_a, row_of_a, row_of_b), (hospital_b, row_of_b, row_of_a)):
        before = last_audit_pk()
        headers = auth(owner.integration_token)
        found = client.get(f"/dicomweb/studies/{row.study.study_instance_uid}/instances", **headers)
        read = client.get(path, **headers)
        metadata = client.get(path + "/metadata", **headers)

        assert [item["00080018"]["Value"] for item in found.json()] == [[row.sop_instance_uid]]
        assert b"".join(read.streaming_content).count(blob_get(key=row.storage_key)) == 1
        assert metadata.json()[0]["00100010"]["Value"][0]["Alphabetic"] == pydicom_name(row)
        entries = audit_entries_since(before)
        assert all(f"ImagingStudy/{other.study.fhir_id}" not in entry.event for entry in entries)
        assert sum(f"ImagingStudy/{row.study.fhir_id}" in entry.event for entry in entries) == 2  # the reads


# --- 5. probing, limits and malformed requests on /dicomweb/ ------------------------------------

def test_another_hospitals_study_answers_exactly_like_an_unknown_one(hospital_a, hospital_b, client):
    row = store_as(HOSPITAL_A, dicom_dataset(CT))
    unknown = f"/dicomweb/studies/{generate_uid()}/series/{generate_uid()}/instances/{generate_uid()}"
    before = last_audit_pk()

    for suffix in ("", "/metadata", "/frames/1", "/rendered"):
        theirs = client.get(instance_path(row) + suffix, **auth(hospital_b.integration_token))
        missing = client.get(unknown + suffix, **auth(hospital_b.integration_token))
        assert (theirs.status_code, theirs.json()) == (missing.status_code, missing.json()) == (
            404, {"errorMessage": "No such study", "status": 404})
    entries = audit_entries_since(before)
    assert {entry.outcome for entry in entries} == {"4"}
    assert sum(f"ImagingStudy/{row.study.fhir_id}" in entry.event for entry in entries) == 4  # A's DPO sees it


@pytest.mark.parametrize("query", ["limit=1001", "limit=0", "limit=99999999999999999999", "offset=-1",
                                   "offset=4294967296", "includefield=NoSuchKeyword", "includefield=(0010,0010"])
def test_qido_limits_and_includefield_abuse_are_400(hospital_a, client, query):
    response = client.get(f"/dicomweb/studies?{query}", **auth(hospital_a.integration_token))

    assert response.status_code == 400 and response.json()["status"] == 400


def test_a_repeated_frame_number_is_400(hospital_a, client):
    row = store_as(HOSPITAL_A, dicom_dataset(CT))

    response = client.get(f"{instance_path(row)}/frames/1,1,1", **auth(hospital_a.integration_token))

    assert response.status_code == 400


def test_more_parts_than_allowed_is_413_and_stores_nothing(hospital_a, client, settings, dicom_folder):
    settings.DICOMWEB_MAX_INSTANCES_PER_REQUEST = 2

    response = stow(client, hospital_a.integration_token, dicom_bytes(CT), dicom_bytes(MR), b"x" * 200)

    assert response.status_code == 413
    assert_nothing_stored(dicom_folder)


@pytest.mark.parametrize(("content_type", "body"), [
    ("multipart/related; type=\"application/dicom\"; boundary*=utf-8''%E2%82%AC", b"--\xe2\x82\xac\r\n\r\nx"),
    (f'multipart/related; type="application/dicom"; boundary={"b" * 71}', b"--" + b"b" * 71 + b"--"),
    ('multipart/related; type="application/dicom"; boundary=x', b"--x"),
    ('multipart/related; type="application/dicom"; boundary=x', b"--x\r\n"),
    ('multipart/related; type="application/dicom"; boundary=x', b"--x\r\nContent-Type: application/dicom"),
    ('multipart/related; type="application/dicom"; boundary=x', b"\r\n\r\n--x\r\n\r\n\r\n--x"),
    ('multipart/related; type="application/dicom"; boundary=x', b"--x\r\n\r\n\r\n--x\r\n\r\n--x--"),
    ('multipart/related; type="application/dicom"; boundary="', b"--\r\n\r\n--"),
    ('multipart/related; type="application/dicom"; boundary=x', b"\x00" * 1000),
], ids=["non-ascii", "too-long", "only-delimiter", "no-headers", "cut-in-headers", "empty-parts",
        "empty-parts-closed", "empty-quoted", "binary"])
def test_malformed_multipart_is_4xx_and_stores_nothing(hospital_a, client, dicom_folder, content_type, body):
    response = client.post("/dicomweb/studies", body, content_type=content_type, **auth(hospital_a.integration_token))

    assert 400 <= response.status_code < 500  # empty parts are each refused 0xC000 (409)
    assert_nothing_stored(dicom_folder)
