"""UIDs per organization: two hospitals each hold their own copy of one study, under one UID.

Stores look only at the sender's rows (re-store, conflicts, locks, file keys), reads pick the
copy the caller may see, and the migration that introduced this keeps the rows and files of
a node that stored under node-wide UIDs.
"""

from __future__ import annotations

import json
import threading

import pytest
from django.db import OperationalError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from pydicom.uid import generate_uid

from access.models import Role
from ehr.models import Resource
from imaging import services
from imaging.blobs import blob_get, blob_put, instance_key, organization_segment
from imaging.models import Instance, Series, Study
from imaging.reading import DUPLICATE_SOP_INSTANCE, instance_read
from imaging.services.locks import advisory_locks, sop_lock, study_lock
from ledger.models import AuditEntry, ConsentToken
from tests.imaging.conftest import (
    CT,
    HOSPITAL,
    MR,
    OTHER,
    dicom_bytes,
    dicom_dataset,
    encoded,
    role_token,
)
from tests.imaging.test_dicomweb_access import stow

FAILED, REASON = "00081198", "00081197"


def store(organization: str, data: bytes) -> Instance:
    outcome = services.instance_store(incoming=instance_read(data), organization_id=organization)
    services.study_sync_fhir(study_ids=[outcome.study.pk])
    return Instance.objects.select_related("study", "series").get(pk=outcome.instance.pk)


def renamed(name: str, patient_name: str, **uids: str) -> bytes:
    dataset = dicom_dataset(name)
    dataset.PatientName = patient_name
    for keyword, value in uids.items():
        setattr(dataset, keyword, value)
    return encoded(dataset)


def path_of(row: Instance, series_uid: str | None = None) -> str:
    return (f"/dicomweb/studies/{row.study.study_instance_uid}/series/{series_uid or row.series.series_instance_uid}"
            f"/instances/{row.sop_instance_uid}")


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def consent(patient_id: str, *, owner: str, grantee: str) -> None:
    """An active treatment consent of ``owner``'s patient for ``grantee`` (as test_dicomweb_access)."""
    Resource.objects.create(resource_type="Consent", logical_id=f"c-{patient_id}"[:64], version_id=1,
                            last_updated=timezone.now(), text="{}", patient_id=patient_id, organization_id=owner)
    ConsentToken.objects.create(
        patient_id=patient_id, organization_id=owner, consent_id=f"c-{patient_id}"[:64], consent_version=1,
        consent_hash=b"\0" * 32, grantee=f"Organization/{grantee}", purpose="TREAT", pseudonym=b"\0" * 32,
        terms=b"\0" * 32, status=ConsentToken.ACTIVE, token_id="0x" + "cd" * 32)


@pytest.fixture
def copies(db) -> tuple[Instance, Instance]:
    """CT_small stored by hospital A, and by hospital B with another patient name (same UIDs)."""
    return store(HOSPITAL, dicom_bytes(CT)), store(OTHER, renamed(CT, "Bravo^Bea"))


# --- storing ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_each_organization_has_its_own_rows_file_and_imaging_study(copies):
    of_a, of_b = copies

    assert (of_a.study.study_instance_uid, of_a.series.series_instance_uid, of_a.sop_instance_uid) == (
        of_b.study.study_instance_uid, of_b.series.series_instance_uid, of_b.sop_instance_uid)
    assert (of_a.organization_id, of_a.series.organization_id, of_a.study.organization_id) == (HOSPITAL,) * 3
    assert (of_b.organization_id, of_b.series.organization_id, of_b.study.organization_id) == (OTHER,) * 3
    assert of_a.series_id != of_b.series_id and of_a.study.patient_id != of_b.study.patient_id
    assert of_a.storage_key.startswith(f"{HOSPITAL}/") and of_b.storage_key.startswith(f"{OTHER}/")
    assert blob_get(key=of_a.storage_key) == dicom_bytes(CT)
    assert blob_get(key=of_b.storage_key) == renamed(CT, "Bravo^Bea")
    studies = Resource.objects.filter(resource_type="ImagingStudy")
    assert sorted(studies.values_list("logical_id", "organization_id")) == sorted(
        [(of_a.study.fhir_id, HOSPITAL), (of_b.study.fhir_id, OTHER)])
    assert {json.loads(row.text)["identifier"][0]["value"] for row in studies} == {
        f"urn:oid:{of_a.study.study_instance_uid}"}


@pytest.mark.django_db
def test_re_store_and_conflicts_are_judged_within_the_organization(client, copies):
    of_a, of_b = copies
    token_b = role_token("int-b", Role.INTEGRATION, organization=OTHER)

    again = stow(client, token_b, renamed(CT, "Bravo^Bea"))  # B's own bytes: nothing written
    as_a = stow(client, token_b, dicom_bytes(CT))  # A's bytes under B's stored UID: B's conflict

    assert again.status_code == 200 and FAILED not in again.json()
    assert as_a.status_code == 409
    assert [item[REASON]["Value"] for item in as_a.json()[FAILED]["Value"]] == [[DUPLICATE_SOP_INSTANCE]]
    assert Instance.objects.count() == 2
    assert blob_get(key=of_b.storage_key) == renamed(CT, "Bravo^Bea")
    assert blob_get(key=of_a.storage_key) == dicom_bytes(CT)
    outcome = services.instance_store(incoming=instance_read(dicom_bytes(CT)), organization_id=HOSPITAL)
    assert (outcome.result, outcome.instance.pk) == (services.ALREADY_STORED, of_a.pk)


@pytest.mark.django_db
def test_a_series_of_another_hospitals_study_is_no_conflict_for_a_new_study(copies):
    of_a, _ = copies
    # A third hospital puts A's series UID under a study of its own: A's rows are not in its namespace.
    data = renamed(MR, "Bravo^Bea", SeriesInstanceUID=of_a.series.series_instance_uid)

    outcome = services.instance_store(incoming=instance_read(data), organization_id=OTHER + "-2")

    assert outcome.result == services.STORED and outcome.instance.series.pk != of_a.series_id


@pytest.mark.django_db(transaction=True)
def test_another_hospitals_store_of_the_same_uids_never_waits_for_this_one():
    dataset = dicom_dataset(CT)
    held, release = threading.Event(), threading.Event()

    def hold_hospital_a_locks() -> None:
        try:
            with transaction.atomic():
                advisory_locks([sop_lock(HOSPITAL, dataset.SOPInstanceUID),
                                study_lock(HOSPITAL, dataset.StudyInstanceUID)])
                held.set()
                release.wait(20)
        finally:
            connection.close()

    thread = threading.Thread(target=hold_hospital_a_locks)
    thread.start()
    try:
        assert held.wait(20)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")
            outcome = services.instance_store(incoming=instance_read(dicom_bytes(CT)), organization_id=OTHER)
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            services.instance_store(incoming=instance_read(dicom_bytes(CT)), organization_id=HOSPITAL)
    finally:
        release.set()
        thread.join()
    assert outcome.result == services.STORED and Study.objects.get().organization_id == OTHER


@pytest.mark.django_db
def test_de_identified_copies_are_made_per_organization(copies):
    of_a, of_b = copies

    made = [services.instance_deidentify(instance_id=row.pk) for row in copies]

    assert made[0].deid_storage_key != made[1].deid_storage_key
    assert made[0].deid_storage_key.startswith(f"{HOSPITAL}/") and made[1].deid_storage_key.startswith(f"{OTHER}/")
    assert blob_get(key=of_a.storage_key) == dicom_bytes(CT)


def test_organization_segments_are_one_safe_segment_each():
    assert organization_segment("hospital-a_1") == "hospital-a_1"
    assert organization_segment("../x") == "~2e~2e~2fx"
    assert organization_segment("~2e") == "~7e2e" != organization_segment(".")
    assert organization_segment("é") == "~c3~a9" and organization_segment("") == "~"
    assert instance_key("a/b", "1.2", "1.2.3") == "a~2fb/1.2/1.2.3.dcm"


# --- reading ------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_hospital_that_may_see_both_copies_finds_both_and_retrieves_its_own(client, copies):
    of_a, of_b = copies
    consent(of_a.study.patient_id, owner=HOSPITAL, grantee=OTHER)  # A's patient lets B read A's copy
    token_b = role_token("int-b", Role.INTEGRATION, organization=OTHER)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token_b}"}
    uid = of_a.study.study_instance_uid

    found = client.get(f"/dicomweb/studies?StudyInstanceUID={uid}&includefield=PatientName", **headers)
    read = client.get(path_of(of_a), **headers)
    event = json.loads(AuditEntry.objects.order_by("-id").first().event)

    names = sorted(item["00100010"]["Value"][0]["Alphabetic"] for item in found.json())
    assert found.status_code == 200 and len(names) == 2 and "Bravo^Bea" in names
    assert read.status_code == 200 and body(read).count(renamed(CT, "Bravo^Bea")) == 1
    assert body(client.get(path_of(of_a), **headers)).count(dicom_bytes(CT)) == 0  # copies are never mixed
    assert {"reference": f"ImagingStudy/{of_b.study.fhir_id}"} in [entity["what"] for entity in event["entity"]]


@pytest.mark.django_db
def test_a_series_only_the_visible_copy_of_another_hospital_holds_comes_from_that_copy(client, copies):
    of_a, of_b = copies
    second = renamed(MR, "Alpha", StudyInstanceUID=of_a.study.study_instance_uid)
    row = store(HOSPITAL, second)  # a series A holds and B's copy lacks
    consent(of_a.study.patient_id, owner=HOSPITAL, grantee=OTHER)
    token_b = role_token("int-b", Role.INTEGRATION, organization=OTHER)
    stranger = role_token("int-c", Role.INTEGRATION, organization="hosp-c")

    shared = client.get(path_of(row), HTTP_AUTHORIZATION=f"Bearer {token_b}")
    event = json.loads(AuditEntry.objects.order_by("-id").first().event)
    refused = client.get(path_of(row), HTTP_AUTHORIZATION=f"Bearer {stranger}")

    assert shared.status_code == 200 and body(shared).count(second) == 1
    assert {"reference": f"ImagingStudy/{of_a.study.fhir_id}"} in [entity["what"] for entity in event["entity"]]
    assert "0x" + "cd" * 32 in json.dumps(event)  # the consent that let B read A's copy
    assert (refused.status_code, refused.json()) == (404, {"errorMessage": "No such study", "status": 404})


@pytest.mark.django_db
def test_a_series_missing_from_the_callers_copy_answers_as_if_no_one_held_it(client, copies):
    of_a, of_b = copies
    row = store(HOSPITAL, renamed(MR, "Alpha", StudyInstanceUID=of_a.study.study_instance_uid))
    token_b = role_token("int-b", Role.INTEGRATION, organization=OTHER)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token_b}"}

    held_by_a = client.get(path_of(row), **headers)
    held_by_no_one = client.get(path_of(row, series_uid=generate_uid()), **headers)

    assert held_by_a.status_code == held_by_no_one.status_code == 404
    assert held_by_a.json() == held_by_no_one.json() == {
        "errorMessage": "No such series or instance in this study", "status": 404}


# --- the migration ------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_rows_and_files_stored_under_node_wide_uids(client):
    """A node that stored before UIDs were per organization: same rows, owners copied, files read."""
    study_uid, series_uid, sop_uid = generate_uid(), generate_uid(), generate_uid()
    data = renamed(CT, "Old^Row", StudyInstanceUID=study_uid, SeriesInstanceUID=series_uid,
                   SOPInstanceUID=sop_uid)
    old_key = f"{study_uid}/{sop_uid}.dcm"  # the key layout before the organization was in it
    blob_put(key=old_key, data=data)
    incoming = instance_read(data)
    executor = MigrationExecutor(connection)
    executor.migrate([("imaging", "0001_initial")])
    try:
        old = executor.loader.project_state([("imaging", "0001_initial")]).apps
        study = old.get_model("imaging", "Study").objects.create(
            study_instance_uid=study_uid, organization_id=HOSPITAL, patient_id="p-old", fhir_id="old-study",
            fhir_stale=True)
        series = old.get_model("imaging", "Series").objects.create(study_id=study.pk, series_instance_uid=series_uid)
        old.get_model("imaging", "Instance").objects.create(
            study_id=study.pk, series_id=series.pk, sop_instance_uid=sop_uid, sop_class_uid=incoming.sop_class_uid,
            transfer_syntax_uid=incoming.transfer_syntax_uid, content_sha256=incoming.content_sha256,
            size=len(data), storage_key=old_key)
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes("imaging"))

    instance = Instance.objects.select_related("study", "series").get()
    assert (instance.organization_id, Series.objects.get().organization_id) == (HOSPITAL, HOSPITAL)
    assert instance.storage_key == old_key and instance.study.pk == study.pk
    token = role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)
    read = client.get(path_of(instance), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert read.status_code == 200 and body(read).count(data) == 1
    again = services.instance_store(incoming=instance_read(data), organization_id=HOSPITAL)
    theirs = services.instance_store(incoming=instance_read(data), organization_id=OTHER)
    assert (again.result, again.instance.pk) == (services.ALREADY_STORED, instance.pk)
    assert theirs.result == services.STORED and theirs.instance.storage_key == instance_key(OTHER, study_uid, sop_uid)
