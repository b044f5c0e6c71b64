"""FHIR RESTful interactions over HTTP: status codes, headers, versions, errors, nothing half-written."""

from __future__ import annotations

import json

import pytest

from ehr.models import Resource, ResourceVersion
from tests.ehr.conftest import observation, patient

pytestmark = pytest.mark.django_db


def test_create_assigns_id_and_version_and_keeps_the_client_text(fhir):
    text = ('{"resourceType": "Observation", "id": "client-chosen", "status": "final",'
            ' "code": {"text": "weight"}, "valueQuantity": {"value": 70.50, "unit": "kg"},'
            ' "effectiveDateTime": "2024-05-01T10:00:00.000+02:00"}')

    response = fhir.post("/fhir/Observation", text)

    assert response.status_code == 201
    body = response.json()
    assert body["id"] != "client-chosen"
    assert body["meta"]["versionId"] == "1"
    assert response["Location"] == f"http://testserver/fhir/Observation/{body['id']}/_history/1"
    assert response["ETag"] == 'W/"1"'
    assert response["Last-Modified"].endswith("GMT")
    assert response["Content-Type"].startswith("application/fhir+json")
    raw = response.content.decode()
    assert '"value": 70.50' in raw and '"2024-05-01T10:00:00.000+02:00"' in raw


def test_read_returns_the_stored_text_with_etag(fhir):
    created = fhir.create(patient())

    response = fhir.get(f"/fhir/Patient/{created['id']}")

    assert response.status_code == 200
    assert response.json() == created
    assert response["ETag"] == 'W/"1"'


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/fhir/Patient/does-not-exist", 404, "not-found"),
    ("/fhir/Nonsense/1", 404, "not-found"),
    ("/fhir/Patient/1/_history/9", 404, "not-found"),
    ("/fhir/some/unknown/path", 404, "not-found"),
])
def test_unknown_things_answer_operation_outcome(fhir, path, status, code):
    response = fhir.get(path)

    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == code


def test_update_makes_version_two_and_vread_keeps_version_one(fhir):
    created = fhir.create(patient(family="Old"))
    changed = {**created, "name": [{"family": "New"}]}

    response = fhir.put(f"/fhir/Patient/{created['id']}", changed)

    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    old = fhir.get(f"/fhir/Patient/{created['id']}/_history/1").json()
    assert old["name"][0]["family"] == "Old"


def test_update_as_create_uses_the_client_id(fhir):
    response = fhir.put("/fhir/Patient/chosen-by-client", {**patient(), "id": "chosen-by-client"})

    assert response.status_code == 201
    assert response.json()["id"] == "chosen-by-client"


def test_update_with_a_different_id_in_the_body_is_refused(fhir):
    response = fhir.put("/fhir/Patient/abc", {**patient(), "id": "xyz"})

    assert response.status_code == 400
    assert not Resource.objects.filter(logical_id__in=["abc", "xyz"]).exists()


def test_stale_if_match_gives_412_and_writes_nothing(fhir):
    created = fhir.create(patient())
    fhir.put(f"/fhir/Patient/{created['id']}", created)

    response = fhir.put(f"/fhir/Patient/{created['id']}", created, HTTP_IF_MATCH='W/"1"')

    assert response.status_code == 412
    assert ResourceVersion.objects.filter(logical_id=created["id"]).count() == 2


def test_json_patch_updates_and_a_bad_patch_writes_nothing(fhir):
    created = fhir.create(patient())
    path = f"/fhir/Patient/{created['id']}"

    ok = fhir.patch(path, [{"op": "replace", "path": "/birthDate", "value": "1980-01-02"}])
    invalid = fhir.patch(path, [{"op": "replace", "path": "/birthDate", "value": "not a date"}])
    broken = fhir.patch(path, "[{")

    assert ok.status_code == 200 and ok.json()["birthDate"] == "1980-01-02"
    assert ok.json()["meta"]["versionId"] == "2"
    assert invalid.status_code == 422 and broken.status_code == 400
    assert fhir.get(path).json()["meta"]["versionId"] == "2"


def test_delete_then_read_is_410_and_history_shows_the_delete(fhir):
    created = fhir.create(patient())
    path = f"/fhir/Patient/{created['id']}"

    assert fhir.delete(path).status_code == 204
    assert fhir.get(path).status_code == 410
    assert fhir.delete(path).status_code == 204
    history = fhir.get(f"{path}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert fhir.delete("/fhir/Patient/never-was").status_code == 404


def test_history_is_newest_first_and_paged(fhir):
    created = fhir.create(patient())
    for family in ("B", "C", "D"):
        fhir.put(f"/fhir/Patient/{created['id']}", {**created, "name": [{"family": family}]})

    page = fhir.get(f"/fhir/Patient/{created['id']}/_history?_count=2").json()

    assert page["type"] == "history" and page["total"] == 4
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["4", "3"]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    second = fhir.get(next_url.replace("http://testserver", "")).json()
    assert [e["resource"]["meta"]["versionId"] for e in second["entry"]] == ["2", "1"]
    assert fhir.get("/fhir/Patient/_history").json()["total"] == 4
    assert fhir.get("/fhir/_history").json()["total"] == 4


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    ("Patient", "{not json", 400, "structure"),
    ("Patient", '{"resourceType": "Patient", "birthDate": "1970-13-45"}', 422, "value"),
    ("Patient", '{"resourceType": "Patient", "unknownElement": 1}', 422, "structure"),
    ("Observation", '{"resourceType": "Observation", "status": "final"}', 422, "required"),
    ("Patient", '{"resourceType": "Patient2"}', 400, "structure"),
    ("Patient", '{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', 400, "invalid"),
    ("Patient", "[]", 400, "structure"),
])
def test_bad_input_is_an_operation_outcome_and_writes_nothing(fhir, path, body, status, code):
    response = fhir.post(f"/fhir/{path}", body)

    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == code
    assert Resource.objects.count() == 0


def test_validation_issues_name_the_element(fhir):
    response = fhir.post("/fhir/Patient", {"resourceType": "Patient", "birthDate": "yesterday"})

    assert response.json()["issue"][0]["expression"] == ["birthDate"]


def test_xml_is_refused_with_415_and_406(fhir):
    posted = fhir.post("/fhir/Patient", "<Patient/>", content_type="application/fhir+xml")
    asked = fhir.get("/fhir/metadata", HTTP_ACCEPT="application/fhir+xml")
    formatted = fhir.get("/fhir/metadata?_format=xml")

    assert (posted.status_code, asked.status_code, formatted.status_code) == (415, 406, 406)
    assert posted.json()["resourceType"] == "OperationOutcome"


def test_unsupported_method_is_405_with_allow(fhir):
    response = fhir.delete("/fhir/metadata")

    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json()["issue"][0]["code"] == "not-supported"


def test_no_token_is_401_operation_outcome(client, db):
    response = client.get("/fhir/Patient")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["issue"][0]["code"] == "login"


@pytest.mark.parametrize(("prefer", "expect"), [
    ("return=minimal", ""),
    ("return=representation", "Patient"),
    ("return=OperationOutcome", "OperationOutcome"),
])
def test_prefer_return_shapes_the_answer(fhir, prefer, expect):
    response = fhir.post("/fhir/Patient", patient(), HTTP_PREFER=prefer)

    assert response.status_code == 201
    assert (response.json()["resourceType"] if response.content else "") == expect
    assert response["Location"]


def test_metadata_says_4_0_1_and_4_3_when_asked(fhir):
    default = fhir.get("/fhir/metadata").json()
    asked = fhir.get("/fhir/metadata", HTTP_ACCEPT="application/fhir+json; fhirVersion=4.3")

    assert default["fhirVersion"] == "4.0.1"
    assert asked.json()["fhirVersion"] == "4.3.0"
    assert "fhirVersion=4.3.0" in asked["Content-Type"]
    patient_entry = next(r for r in default["rest"][0]["resource"] if r["type"] == "Patient")
    names = {p["name"] for p in patient_entry["searchParam"]}
    assert {"name", "birthdate", "identifier", "_id", "_lastUpdated"} <= names
    assert patient_entry["operation"][0]["name"] == "everything"


def test_everything_returns_the_patient_and_only_its_compartment(fhir):
    mine = fhir.create(patient())
    other = fhir.create(patient(family="Other"))
    obs = fhir.create(observation(f"Patient/{mine['id']}"))
    fhir.create(observation(f"Patient/{other['id']}"))

    bundle = fhir.get(f"/fhir/Patient/{mine['id']}/$everything").json()

    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert ids == {("Patient", mine["id"]), ("Observation", obs["id"])}
    assert bundle["total"] == 2


def test_stored_text_survives_round_trip_for_base64_and_decimals(fhir):
    text = json.dumps({
        "resourceType": "DocumentReference", "status": "current",
        "content": [{"attachment": {"contentType": "text/plain", "data": "SGVsbG8gd29ybGQ="}}],
    }).replace('"current"', '"current", "extension": [{"url": "http://x", "valueDecimal": 1.000}]')

    created = fhir.post("/fhir/DocumentReference", text)
    read = fhir.get(f"/fhir/DocumentReference/{created.json()['id']}").content.decode()

    assert '"valueDecimal": 1.000' in read and '"SGVsbG8gd29ybGQ="' in read


def test_a_body_over_the_limit_is_413(fhir, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = fhir.post("/fhir/Patient", patient(family="x" * 2000))

    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_metadata_is_public_for_smart_discovery_and_still_audited(client, db):
    from ledger.models import AuditEntry

    response = client.get("/fhir/metadata")

    assert response.status_code == 200
    assert response.json()["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert AuditEntry.objects.get().agent == "(anonymous)"


def test_metadata_with_a_bad_token_is_still_401(client, db):
    response = client.get("/fhir/metadata", HTTP_AUTHORIZATION="Bearer nonsense")

    assert response.status_code == 401


@pytest.mark.parametrize("path", [
    "/fhir/Patient/abc/_history/²",
    "/fhir/Patient/_history?_offset=99999999999999999999999",
    "/fhir/_history?_count=99999999999999999999",
])
def test_odd_numbers_in_the_path_or_query_are_4xx_not_500(fhir, path):
    response = fhir.get(path)

    assert 400 <= response.status_code < 500
    assert response.json()["resourceType"] == "OperationOutcome"
