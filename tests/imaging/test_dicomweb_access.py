"""DICOMweb authorization per role, and one audit entry per request whether allowed or refused."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone
from pydicom.uid import generate_uid

from access.models import Role
from ehr.models import Resource
from imaging import services
from imaging.models import Instance, Study
from imaging.reading import instance_read
from ledger.models import AuditEntry
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

pytestmark = pytest.mark.django_db


@pytest.fixture
def studies(db) -> dict[str, Study]:
    """CT_small owned by hospital A, MR_small by hospital B, each with its FHIR resources."""
    ct = services.instance_store(incoming=instance_read(dicom_bytes(CT)), organization_id=HOSPITAL)
    mr = services.instance_store(incoming=instance_read(dicom_bytes(MR)), organization_id=OTHER)
    services.study_sync_fhir(study_ids=[ct.study.pk, mr.study.pk])
    return {"a": ct.study, "b": mr.study}


def call(client, method: str, path: str, token: str | None = None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return getattr(client, method)(path, **headers, **extra)


def wado(study: Study) -> str:
    instance = Instance.objects.select_related("series").get(study=study)
    return (f"/dicomweb/studies/{study.study_instance_uid}/series/{instance.series.series_instance_uid}"
            f"/instances/{instance.sop_instance_uid}")


def last_audit() -> dict:
    return json.loads(AuditEntry.objects.order_by("-id").first().event)


def stow(client, token: str | None, *parts: bytes, study_uid: str | None = None, **extra):
    boundary = "b0undary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
                    for part in parts) + b"--" + boundary.encode() + b"--\r\n"
    path = "/dicomweb/studies" + (f"/{study_uid}" if study_uid else "")
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(path, body, content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
                       **headers, **extra)


def test_the_owning_integration_searches_and_reads_its_study(client, studies):
    token = role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)
    before = AuditEntry.objects.count()

    found = call(client, "get", "/dicomweb/studies", token)
    read = call(client, "get", wado(studies["a"]), token)

    assert found.status_code == 200
    assert [item["0020000D"]["Value"][0] for item in found.json()] == [studies["a"].study_instance_uid]
    assert read.status_code == 200
    assert read["Content-Type"].startswith('multipart/related; type="application/dicom"')
    assert AuditEntry.objects.count() == before + 2
    event = last_audit()
    assert event["subtype"][0]["code"] == "read" and event["outcome"] == "0"
    assert {"reference": f"ImagingStudy/{studies['a'].fhir_id}"} in [e["what"] for e in event["entity"]]
    assert {"reference": f"Patient/{studies['a'].patient_id}"} in [e["what"] for e in event["entity"]]
    assert event["agent"][0]["who"]["identifier"]["value"] == "int-a"


def test_another_organization_sees_nothing_and_is_refused_reads(client, studies):
    token = role_token("int-b", Role.INTEGRATION, organization=OTHER)
    before = AuditEntry.objects.count()

    found = call(client, "get", f"/dicomweb/studies?StudyInstanceUID={studies['a'].study_instance_uid}", token)
    series = call(client, "get", f"/dicomweb/studies/{studies['a'].study_instance_uid}/series", token)
    read = call(client, "get", wado(studies["a"]), token)
    metadata = call(client, "get", f"/dicomweb/studies/{studies['a'].study_instance_uid}/metadata", token)

    assert found.status_code == 200 and found.json() == []
    assert series.status_code == 200 and series.json() == []
    assert read.status_code == 404 and metadata.status_code == 404  # as unknown: no existence oracle
    assert read.json() == {"errorMessage": "No such study", "status": 404}
    assert AuditEntry.objects.count() == before + 4
    assert last_audit()["outcome"] == "4"
    assert last_audit()["subtype"][0]["code"] == "read"


def test_another_organization_stores_its_own_copy_never_into_the_study_it_does_not_own(client, studies):
    token = role_token("int-b", Role.INTEGRATION, organization=OTHER)
    new_instance = dicom_dataset(CT)  # a new instance of hospital A's study
    new_instance.SOPInstanceUID = new_instance.file_meta.MediaStorageSOPInstanceUID = generate_uid()

    response = stow(client, token, dicom_bytes(CT), encoded(new_instance))

    assert response.status_code == 200 and "00081198" not in response.json()
    theirs = Study.objects.get(study_instance_uid=studies["a"].study_instance_uid, organization_id=OTHER)
    assert theirs.pk != studies["a"].pk and theirs.instances.count() == 2
    assert Instance.objects.filter(study=studies["a"]).count() == 1  # hospital A's study is as it was
    assert last_audit()["subtype"][0]["code"] == "create"
    assert {"reference": f"ImagingStudy/{theirs.fhir_id}"} in [e["what"] for e in last_audit()["entity"]]


def test_a_patient_sees_their_own_study_and_nothing_else(client, studies):
    token = role_token("pat-a", Role.PATIENT, patient=studies["a"].patient_id)

    found = call(client, "get", "/dicomweb/studies", token)
    own = call(client, "get", wado(studies["a"]), token)
    other = call(client, "get", wado(studies["b"]), token)
    stored = stow(client, token, dicom_bytes(CT))

    assert [item["0020000D"]["Value"][0] for item in found.json()] == [studies["a"].study_instance_uid]
    assert own.status_code == 200
    assert other.status_code == 404
    assert stored.status_code == 403
    assert last_audit()["subtype"][0]["code"] == "create" and last_audit()["outcome"] == "4"


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.DPO])
def test_roles_without_chart_access_are_refused(client, studies, role):
    token = role_token(f"{role}-user", role)
    before = AuditEntry.objects.count()

    responses = [call(client, "get", "/dicomweb/studies", token), call(client, "get", wado(studies["a"]), token),
                 stow(client, token, dicom_bytes(CT))]

    assert [r.status_code for r in responses] == [403, 403, 403]
    assert all(r["Content-Type"] == "application/json" for r in responses)
    assert AuditEntry.objects.count() == before + 3
    assert {json.loads(e.event)["outcome"] for e in AuditEntry.objects.order_by("-id")[:3]} == {"4"}


def test_no_token_is_401_and_audited(client, studies):
    before = AuditEntry.objects.count()

    responses = [call(client, "get", "/dicomweb/studies"), call(client, "get", wado(studies["a"])),
                 stow(client, None, dicom_bytes(CT))]

    assert [r.status_code for r in responses] == [401, 401, 401]
    assert responses[0]["WWW-Authenticate"].startswith("Bearer")
    assert responses[0].json()["status"] == 401
    assert AuditEntry.objects.count() == before + 3
    assert last_audit()["agent"][0]["who"]["identifier"]["value"] == "(anonymous)"
    assert Instance.objects.count() == 2


def test_a_search_is_audited_with_its_query(client, studies):
    token = role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)

    call(client, "get", "/dicomweb/studies?PatientID=1CT1", token)

    event = last_audit()
    assert event["subtype"][0]["code"] == "search-type"
    [query] = [e for e in event["entity"] if "query" in e]
    assert query["query"]  # base64 of the query string
    assert {"reference": f"Patient/{studies['a'].patient_id}"} in [e.get("what") for e in event["entity"]]


def test_a_token_whose_scopes_exclude_imaging_study_is_refused(client, studies):
    token = role_token("narrow", Role.INTEGRATION, organization=HOSPITAL, scope="user/Patient.rs")

    response = call(client, "get", "/dicomweb/studies", token)

    assert response.status_code == 403
    assert "scopes" in response.json()["errorMessage"]


def test_unknown_paths_and_methods_answer_json_errors(client, studies):
    token = role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)

    missing = call(client, "get", "/dicomweb/nothing/here", token)
    unknown_study = call(client, "get", "/dicomweb/studies/1.2.3.4", token)
    wrong_method = call(client, "delete", "/dicomweb/studies", token)

    assert missing.status_code == 404 and missing.json()["status"] == 404
    assert unknown_study.status_code == 404
    assert wrong_method.status_code == 405 and wrong_method["Allow"] == "GET, HEAD, POST"


def test_a_clinician_may_break_the_glass_to_read_and_it_is_flagged(client, studies):
    token = role_token("doc-b", Role.CLINICIAN, organization=OTHER)

    refused = call(client, "get", wado(studies["a"]), token)
    emergency = call(client, "get", wado(studies["a"]), token, HTTP_CARRACK_BREAK_GLASS="unconscious patient")
    write = stow(client, token, dicom_bytes(CT))

    assert refused.status_code == 404 and emergency.status_code == 200
    assert write.status_code == 200  # not into hospital A's study: hospital B stored its own copy
    assert Instance.objects.filter(study=studies["a"]).count() == 1
    assert Study.objects.filter(study_instance_uid=studies["a"].study_instance_uid).count() == 2
    read_event = json.loads(AuditEntry.objects.order_by("-id")[1].event)
    assert read_event["meta"]["security"][0]["code"] == "BTG"


def test_a_patient_consent_lets_another_hospital_read_and_the_token_is_audited(client, studies):
    from ledger.models import ConsentToken

    token = role_token("int-b", Role.INTEGRATION, organization=OTHER)
    # the token's Consent, a record of the patient's own hospital (only those define consent)
    Resource.objects.create(resource_type="Consent", logical_id="c1", version_id=1, last_updated=timezone.now(),
                            text="{}", patient_id=studies["a"].patient_id, organization_id=HOSPITAL)
    ConsentToken.objects.create(
        patient_id=studies["a"].patient_id, organization_id=HOSPITAL, consent_id="c1", consent_version=1,
        consent_hash=b"\0" * 32, grantee=f"Organization/{OTHER}", purpose="TREAT", pseudonym=b"\0" * 32,
        terms=b"\0" * 32, status=ConsentToken.ACTIVE, token_id="0x" + "ab" * 32)

    found = call(client, "get", f"/dicomweb/studies?StudyInstanceUID={studies['a'].study_instance_uid}", token)
    searched = json.loads(AuditEntry.objects.order_by("-id").first().event)
    read = call(client, "get", wado(studies["a"]), token)

    assert [item["0020000D"]["Value"][0] for item in found.json()] == [studies["a"].study_instance_uid]
    assert read.status_code == 200
    assert "0x" + "ab" * 32 in json.dumps(searched)
    assert "0x" + "ab" * 32 in AuditEntry.objects.order_by("-id").first().event


@pytest.mark.parametrize("query", ["PatientID=%00", "StudyDate=2020%00", "AccessionNumber=a%00b",
                                   "ModalitiesInStudy=C%00T", "StudyInstanceUID=1.2%00", "includefield=%00",
                                   "limit=%00", "0010%00=1", "PatientName=*%00*"])
def test_a_nul_character_in_a_search_is_a_client_error_and_audited(client, studies, query):
    token = role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)
    before = AuditEntry.objects.count()

    response = call(client, "get", f"/dicomweb/studies?{query}", token)

    assert response.status_code in (200, 400), response.content[:200]
    assert AuditEntry.objects.count() == before + 1
