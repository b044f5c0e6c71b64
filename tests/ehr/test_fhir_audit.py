"""Every FHIR interaction leaves one AuditEvent, in the same transaction as the access."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from fhir.resources.R4B.auditevent import AuditEvent

from ehr.models import Resource
from ledger.models import AuditEntry
from tests.ehr.conftest import observation, patient

pytestmark = pytest.mark.django_db


def events() -> list[dict]:
    return [json.loads(entry.event) for entry in AuditEntry.objects.order_by("id")]


def subtype(event: dict) -> str:
    return event["subtype"][0]["code"]


def test_a_read_is_audited_with_who_what_and_the_patient(fhir):
    created = fhir.create(patient())

    fhir.get(f"/fhir/Patient/{created['id']}")

    entry = AuditEntry.objects.order_by("-id").first()
    event = json.loads(entry.event)
    assert (entry.agent, entry.outcome, entry.patient_id) == ("integration", "0", created["id"])
    assert subtype(event) == "read" and event["action"] == "R"
    assert any(e.get("what", {}).get("reference") == f"Patient/{created['id']}" for e in event["entity"])
    AuditEvent.model_validate(event)


def test_each_interaction_is_one_entry_with_its_own_subtype(fhir):
    created = fhir.create(patient())
    path = f"/fhir/Patient/{created['id']}"
    fhir.put(path, created)
    fhir.patch(path, [{"op": "replace", "path": "/gender", "value": "female"}])
    fhir.get(f"{path}/_history/1")
    fhir.get(f"{path}/_history")
    fhir.get("/fhir/Patient?family=doe")
    fhir.get(f"{path}/$everything")
    fhir.delete(path)

    assert [subtype(e) for e in events()] == [
        "create", "update", "patch", "vread", "history", "search-type", "operation", "delete"]


def test_a_write_names_the_patient_of_the_resource(fhir):
    owner = fhir.create(patient())

    obs = fhir.create(observation(f"Patient/{owner['id']}"))

    entry = AuditEntry.objects.order_by("-id").first()
    assert entry.patient_id == owner["id"]
    assert f"Observation/{obs['id']}/_history/1" in entry.event


def test_a_search_names_the_patient_whose_records_it_returned(fhir):
    owner = fhir.create(patient())
    fhir.create(observation(f"Patient/{owner['id']}", code="1234"))
    before = AuditEntry.objects.count()

    fhir.get(f"/fhir/Observation?patient=Patient/{owner['id']}&code=1234")

    assert AuditEntry.objects.order_by("id")[before:][0].patient_id == owner["id"]


def test_an_empty_search_names_no_patient(fhir):
    fhir.get("/fhir/Observation?patient=Patient/abc&code=1234")

    assert AuditEntry.objects.get().patient_id is None


def test_refused_requests_are_audited_and_write_nothing_else(fhir, client):
    client.get("/fhir/Patient")
    fhir.post("/fhir/Patient", {"resourceType": "Patient", "birthDate": "nope"})

    denied, invalid = AuditEntry.objects.order_by("id")
    assert (denied.agent, denied.outcome) == ("(anonymous)", "4")
    assert (invalid.agent, invalid.outcome) == ("integration", "4")
    assert "HTTP 422" in invalid.event
    assert Resource.objects.count() == 0


def test_bundle_reads_are_audited_one_by_one(fhir):
    created = fhir.create(patient())
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
        {"request": {"method": "GET", "url": "Patient?family=doe"}},
    ]}

    fhir.post("/fhir", bundle)

    assert [subtype(e) for e in events()][-3:] == ["read", "search-type", "batch"]


def test_bundle_writes_are_named_in_an_entry_per_patient(fhir):
    alice, bob = fhir.create(patient()), fhir.create(patient())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient/{alice['id']}"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation(f"Patient/{bob['id']}"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**alice, "gender": "female"}, "request": {"method": "PUT", "url": f"Patient/{alice['id']}"}},
        {"resource": {"resourceType": "Organization", "name": "Lab"}, "request": {"method": "POST",
                                                                                "url": "Organization"}},
    ]}

    fhir.post("/fhir", bundle)

    entries = list(AuditEntry.objects.order_by("id"))[-3:]
    by_patient = {entry.patient_id: json.loads(entry.event) for entry in entries}
    assert {subtype(event) for event in by_patient.values()} == {"transaction"}

    def written(event):
        return sorted((e["what"]["reference"].split("/")[0], e["lifecycle"]["code"])
                      for e in event["entity"] if "lifecycle" in e)

    assert written(by_patient[None]) == [("Organization", "1")]
    assert written(by_patient[alice["id"]]) == [("Observation", "1"), ("Patient", "3")]
    assert written(by_patient[bob["id"]]) == [("Observation", "1")]
    assert f"Patient/{alice['id']}/_history/2" in {e["what"]["reference"] for e in by_patient[alice["id"]]["entity"]}
    for event in by_patient.values():
        AuditEvent.model_validate(event)


def test_a_failed_transaction_names_no_write(fhir):
    owner = fhir.create(patient())
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient/{owner['id']}"), "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": "Observation/not-there"}},
    ]}

    response = fhir.post("/fhir", bundle)

    assert response.status_code == 404
    last = AuditEntry.objects.order_by("-id").first()
    assert (last.outcome, last.patient_id, subtype(json.loads(last.event))) == ("4", None, "transaction")
    assert "lifecycle" not in last.event
    assert Resource.objects.filter(resource_type="Observation").count() == 0


def test_an_access_that_cannot_be_audited_is_refused(fhir):
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$;
            CREATE TRIGGER refuse_audit BEFORE INSERT ON ledger_auditentry
            FOR EACH ROW EXECUTE FUNCTION refuse_audit();
        """)

    response = fhir.post("/fhir/Patient", patient())

    assert response.status_code == 500
    assert response.json()["issue"][0]["diagnostics"] == "The access could not be audited"
    assert Resource.objects.count() == 0


def test_reads_and_searches_of_a_patients_records_name_the_patient(fhir):
    owner = fhir.create(patient())
    obs = fhir.create(observation(f"Patient/{owner['id']}"))

    fhir.get(f"/fhir/Observation/{obs['id']}")
    fhir.get(f"/fhir/Observation/{obs['id']}/_history/1")
    fhir.get("/fhir/Observation?code=8867-4")

    assert [e.patient_id for e in AuditEntry.objects.order_by("-id")[:3]] == [owner["id"]] * 3
