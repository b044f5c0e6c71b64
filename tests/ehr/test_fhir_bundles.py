"""Batch and transaction Bundles at the base URL, and conditional create."""

from __future__ import annotations

import pytest

from ehr.models import Resource
from tests.ehr.conftest import observation, patient

pytestmark = pytest.mark.django_db

PATIENT_URN = "urn:uuid:11111111-1111-4111-8111-111111111111"


def transaction(*entries, kind="transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_entry(resource: dict, full_url: str | None = None, **request) -> dict:
    entry = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def test_transaction_rewrites_urn_uuid_references_and_answers_in_request_order(fhir):
    bundle = transaction(
        post_entry(observation(PATIENT_URN)),
        post_entry(patient(), PATIENT_URN),
    )

    response = fhir.post("/fhir", bundle)

    assert response.status_code == 200, response.content
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_location, patient_location = (e["response"]["location"] for e in result["entry"])
    assert obs_location.startswith("Observation/") and patient_location.startswith("Patient/")
    patient_id = patient_location.split("/")[1]
    stored = fhir.get("/fhir/" + obs_location.rsplit("/_history", 1)[0]).json()
    assert stored["subject"]["reference"] == f"Patient/{patient_id}"


def test_transaction_is_all_or_nothing(fhir):
    existing = fhir.create(patient(family="Kept"))
    bundle = transaction(
        post_entry(patient(family="New")),
        {"request": {"method": "DELETE", "url": f"Patient/{existing['id']}"}},
        post_entry({"resourceType": "Observation", "status": "final"}),  # invalid: no code
    )
    before = Resource.objects.count()

    response = fhir.post("/fhir", bundle)

    assert response.status_code == 422
    assert "entry[2]" in response.json()["issue"][0]["diagnostics"] or response.json()["issue"]
    assert Resource.objects.count() == before
    assert fhir.get(f"/fhir/Patient/{existing['id']}").status_code == 200


def test_transaction_processes_deletes_before_creates_and_reads_last(fhir):
    gone = fhir.create(patient(family="Gone"))
    bundle = transaction(
        {"request": {"method": "GET", "url": f"Patient/{gone['id']}"}},
        post_entry(patient(family="Fresh")),
        {"request": {"method": "DELETE", "url": f"Patient/{gone['id']}"}},
    )

    response = fhir.post("/fhir", bundle)

    # The GET runs after the DELETE, so it fails and the whole transaction is refused.
    assert response.status_code == 410
    assert fhir.get(f"/fhir/Patient/{gone['id']}").status_code == 200


def test_unresolved_urn_reference_is_refused(fhir):
    response = fhir.post("/fhir", transaction(post_entry(observation(PATIENT_URN))))

    assert response.status_code == 400
    assert "unresolved reference" in response.json()["issue"][0]["diagnostics"]
    assert Resource.objects.count() == 0


def test_batch_entries_fail_independently(fhir):
    bundle = transaction(
        post_entry(patient(family="Good")),
        post_entry({"resourceType": "Patient", "birthDate": "nope"}),
        {"request": {"method": "GET", "url": "Patient/missing"}},
        kind="batch",
    )

    response = fhir.post("/fhir", bundle)

    assert response.status_code == 200
    entries = response.json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["201", "422", "404"]
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert Resource.objects.filter(resource_type="Patient").count() == 1


@pytest.mark.parametrize("body", [
    '{"resourceType": "Bundle", "type": "collection", "entry": []}',
    '{"resourceType": "Patient"}',
    '{"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}}]}',
    '{"resourceType": "Bundle", "type": "transaction", "entry": [',
])
def test_malformed_bundles_are_400(fhir, body):
    response = fhir.post("/fhir", body)

    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_conditional_create_returns_the_match_or_refuses_several(fhir):
    ident = {"identifier": [{"system": "urn:mrn", "value": "42"}]}
    first = fhir.post("/fhir/Patient", patient(**ident), HTTP_IF_NONE_EXIST="identifier=urn:mrn|42")
    again = fhir.post("/fhir/Patient", patient(**ident), HTTP_IF_NONE_EXIST="identifier=urn:mrn|42")
    fhir.create(patient(**ident))
    several = fhir.post("/fhir/Patient", patient(**ident), HTTP_IF_NONE_EXIST="identifier=urn:mrn|42")

    assert (first.status_code, again.status_code, several.status_code) == (201, 200, 412)
    assert again.json()["id"] == first.json()["id"]
    assert Resource.objects.filter(resource_type="Patient").count() == 2


def test_conditional_update_creates_then_updates(fhir):
    body = patient(identifier=[{"system": "urn:mrn", "value": "7"}])

    created = fhir.put("/fhir/Patient?identifier=urn:mrn|7", body)
    updated = fhir.put("/fhir/Patient?identifier=urn:mrn|7", {**body, "gender": "female"})

    assert (created.status_code, updated.status_code) == (201, 200)
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


@pytest.mark.parametrize("body", ['{"resourceType', '{"resourceType": "Bundle", "type": "batch", "entry": [{"req'])
def test_truncated_bundles_are_400(fhir, body):
    response = fhir.post("/fhir", body)

    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "structure"
