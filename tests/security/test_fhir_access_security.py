"""Replays of the red team's FHIR access attacks with two hospitals' accounts (issue 11).

Each test makes the attack through the real door, then checks the refusal, that nothing
was written, and what the audit recorded.
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from access.models import Role
from ehr.models import Resource, ResourceVersion
from ledger.consents.check import consent_check
from ledger.models import AuditEntry, ConsentToken
from tests.consent.test_consent_tokens import consent_body
from tests.ehr.conftest import FhirClient, observation, patient
from tests.imaging.conftest import role_token

from .conftest import HOSPITAL_A, HOSPITAL_B, audit_entries_since, last_audit_pk, resource_count

pytestmark = pytest.mark.django_db

def permit(patient_id: str, grantee: str, **extra) -> dict:
    """The patient's permit for ``grantee`` (TREAT), as the consent tests write it."""
    return {**consent_body(patient_id, grantee=f"Organization/{grantee}"), **extra}


def outcome_of(response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0]["diagnostics"]


# --- Critical: consent planted for a patient id that does not exist yet -----------------------

def test_a_consent_for_a_patient_nobody_registered_is_refused_and_opens_nothing(hospital_a, hospital_b):
    before, audit = resource_count(), last_audit_pk()

    planted = hospital_b.clinician.post("/fhir/Consent", permit("x", HOSPITAL_B))
    planted_by_system = hospital_b.integration.post("/fhir/Consent", permit("x", HOSPITAL_B))
    observation_planted = hospital_b.clinician.post("/fhir/Observation", observation("Patient/x"))

    for response in (planted, planted_by_system, observation_planted):
        assert response.status_code == 422
        assert "Patient/x" in outcome_of(response) and "not a patient this account may write for" in outcome_of(response)
    assert resource_count() == before and not ConsentToken.objects.exists()
    assert [entry.outcome for entry in audit_entries_since(audit)] == ["4", "4", "4"]

    # hospital A then registers Patient/x with its own id and writes its record
    assert hospital_a.integration.put("/fhir/Patient/x", {**patient(), "id": "x"}).status_code == 201
    hospital_a.clinician.create(observation("Patient/x"))

    assert hospital_b.clinician.get("/fhir/Patient/x").status_code == 404
    assert hospital_b.clinician.get("/fhir/Observation?patient=x").json()["total"] == 0
    again = hospital_b.clinician.post("/fhir/Consent", permit("x", HOSPITAL_B))
    assert again.status_code == 422 and outcome_of(again) == outcome_of(planted)  # as if x did not exist


def test_a_consent_of_another_hospital_never_counts_even_if_stored(hospital_a, hospital_b, patient_of_a):
    """A Consent row that names A's patient but belongs to B (as planted before the fix) opens nothing."""
    hospital_b_consent = Resource.objects.create(
        resource_type="Consent", logical_id="planted", version_id=1, last_updated=timezone.now(),
        text=json.dumps(permit(patient_of_a["id"], HOSPITAL_B)), patient_id=patient_of_a["id"],
        organization_id=HOSPITAL_B)
    ConsentToken.objects.create(
        token_id="0x" + "ab" * 32, patient_id=patient_of_a["id"], organization_id=HOSPITAL_B,
        consent_id=hospital_b_consent.logical_id, consent_version=1, consent_hash=b"\0" * 32,
        grantee=f"Organization/{HOSPITAL_B}", purpose="TREAT", serial=0, pseudonym=b"\0" * 32, terms=b"\0" * 32,
        status=ConsentToken.ACTIVE)

    assert consent_check(patient_id=patient_of_a["id"], grantee=f"Organization/{HOSPITAL_B}",
                         purpose="TREAT") is None
    assert hospital_b.clinician.get(f"/fhir/Patient/{patient_of_a['id']}").status_code == 404
    assert hospital_b.clinician.get(f"/fhir/Observation?patient={patient_of_a['id']}").json()["total"] == 0


def test_a_transaction_may_write_records_before_the_patient_it_creates(hospital_a):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation("Patient/mrn-42"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": {**patient(), "id": "mrn-42"}, "request": {"method": "PUT", "url": "Patient/mrn-42"}},
    ]}

    response = hospital_a.integration.post("/fhir", bundle)

    assert response.status_code == 200, response.content
    stored = Resource.objects.get(resource_type="Observation")
    assert (stored.patient_id, stored.organization_id) == ("mrn-42", HOSPITAL_A)


def test_a_transaction_whose_patient_never_comes_writes_nothing(hospital_a):
    before = resource_count()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation("Patient/nobody"), "request": {"method": "POST", "url": "Observation"}},
    ]}

    response = hospital_a.integration.post("/fhir", bundle)

    assert response.status_code == 422 and "Patient/nobody" in outcome_of(response)
    assert resource_count() == before


def test_a_deleted_patient_takes_no_new_records(hospital_a, patient_of_a):
    assert hospital_a.clinician.delete(f"/fhir/Patient/{patient_of_a['id']}").status_code == 204
    before = resource_count()

    response = hospital_a.clinician.post("/fhir/Observation", observation(f"Patient/{patient_of_a['id']}"))

    assert response.status_code == 422 and resource_count() == before


# --- High: chained search on a hidden target ------------------------------------------------

def test_a_chain_does_not_confirm_another_hospitals_patient_attributes(hospital_b, patient_of_a):
    own = hospital_b.clinician.create({
        "resourceType": "Observation", "status": "final", "code": {"text": "probe"},
        "focus": [{"reference": f"Patient/{patient_of_a['id']}"}]})

    right = hospital_b.clinician.get(f"/fhir/Observation?_id={own['id']}&focus:Patient.birthdate=1961-02-03")
    wrong = hospital_b.clinician.get(f"/fhir/Observation?_id={own['id']}&focus:Patient.birthdate=1999-01-01")
    family = hospital_b.clinician.get(f"/fhir/Observation?_id={own['id']}&focus:Patient.family=Alpha")

    assert [r.json()["total"] for r in (right, wrong, family)] == [0, 0, 0]


def test_a_chain_still_works_on_what_the_caller_may_see(hospital_a, patient_of_a):
    found = hospital_a.clinician.get("/fhir/Observation?subject:Patient.birthdate=1961-02-03")
    assert found.json()["total"] == 1


def test_the_dpo_cannot_probe_identifiers_through_consent_chains(hospital_a, hospital_b, patient_of_a):
    hospital_a.clinician.put(f"/fhir/Patient/{patient_of_a['id']}",
                             {**patient(family="Alpha", given="Ann", birth="1961-02-03"), "id": patient_of_a["id"],
                              "identifier": [{"system": "urn:mrn", "value": "MRN-1"}]})
    hospital_a.clinician.post("/fhir/Consent", {**permit(patient_of_a["id"], HOSPITAL_B), "status": "inactive"})

    probe = hospital_b.dpo.get("/fhir/Consent?patient.identifier=urn:mrn|MRN-1")
    miss = hospital_b.dpo.get("/fhir/Consent?patient.identifier=urn:mrn|MRN-2")

    assert probe.status_code == miss.status_code == 200
    assert probe.json()["total"] == miss.json()["total"] == 0


def test_reverse_chaining_is_refused_not_ignored(hospital_a, patient_of_a):
    response = hospital_a.clinician.get("/fhir/Patient?_has:Observation:patient:code=8867-4")

    assert response.status_code == 400 and "_has" in outcome_of(response)


# --- Medium: fake AuditEvents --------------------------------------------------------------

FAKE_EVENT = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
              "agent": [{"requestor": True, "who": {"display": "someone else"}}],
              "source": {"observer": {"display": "x"}}}


@pytest.mark.parametrize("bundle_type", ["transaction", "batch"])
def test_audit_events_are_written_by_the_server_only(hospital_a, bundle_type):
    before = resource_count()
    single = hospital_a.integration.post("/fhir/AuditEvent", FAKE_EVENT)
    put = hospital_a.integration.put("/fhir/AuditEvent/fake", {**FAKE_EVENT, "id": "fake"})
    bundle = hospital_a.integration.post("/fhir", {"resourceType": "Bundle", "type": bundle_type, "entry": [
        {"resource": FAKE_EVENT, "request": {"method": "POST", "url": "AuditEvent"}},
        {"resource": {**FAKE_EVENT, "id": "f2"}, "request": {"method": "PUT", "url": "AuditEvent/f2"}},
        {"request": {"method": "DELETE", "url": "AuditEvent/1"}}]})

    assert single.status_code == 405 and put.status_code == 405
    if bundle_type == "transaction":
        assert bundle.status_code == 405
    else:
        statuses = [entry["response"]["status"] for entry in bundle.json()["entry"]]
        assert all(status.startswith("405") for status in statuses), statuses
    assert resource_count() == before


def test_stored_fake_audit_events_are_never_served(hospital_a):
    """Fakes written before the fix stay in the table, but no search or history serves them."""
    Resource.objects.create(resource_type="AuditEvent", logical_id="old-fake", version_id=1,
                            last_updated=timezone.now(), text=json.dumps({**FAKE_EVENT, "id": "old-fake"}),
                            organization_id=HOSPITAL_A)

    for path in ("/fhir?_type=AuditEvent", "/fhir/_history", "/fhir/_search?_type=AuditEvent"):
        response = (hospital_a.integration.post(path, "", content_type="application/x-www-form-urlencoded")
                    if "_search" in path else hospital_a.integration.get(path))
        assert "old-fake" not in response.content.decode(), path


# --- Medium: break-the-glass ----------------------------------------------------------------

def emergency(**headers):
    return {"HTTP_CARRACK_BREAK_GLASS": "unconscious patient in the ER", **headers}


def test_break_glass_reads_one_patients_record_not_every_organizations_history(hospital_b, patient_of_a):
    history = hospital_b.clinician.get("/fhir/_history", **emergency())
    type_history = hospital_b.clinician.get("/fhir/Observation/_history", **emergency())
    everything_search = hospital_b.clinician.get("/fhir/Observation", **emergency())

    assert history.status_code == 200 and history.json()["total"] == 0
    assert type_history.status_code == 200 and type_history.json()["total"] == 0
    assert everything_search.status_code == 403

    record = hospital_b.clinician.get(f"/fhir/Observation?patient={patient_of_a['id']}", **emergency())
    chart = hospital_b.clinician.get(f"/fhir/Patient/{patient_of_a['id']}/$everything", **emergency())
    assert record.json()["total"] == 1 and chart.json()["total"] == 2
    entry = AuditEntry.objects.order_by("-id").first()
    assert entry.patient_id == patient_of_a["id"] and "ETREAT" in entry.event


def test_break_glass_never_opens_resources_outside_a_patient_compartment(hospital_a, hospital_b):
    organization = hospital_a.integration.create({"resourceType": "Organization", "name": "A's lab"})

    response = hospital_b.clinician.get(f"/fhir/Organization/{organization['id']}", **emergency())

    assert response.status_code == 404


def test_a_refused_break_glass_attempt_is_flagged_in_the_audit(hospital_b, patient_of_a):
    audit = last_audit_pk()

    response = hospital_b.integration.get(f"/fhir/Patient/{patient_of_a['id']}", **emergency())

    assert response.status_code == 403  # only clinicians may break the glass
    [entry] = audit_entries_since(audit)
    event = json.loads(entry.event)
    assert entry.outcome == "4" and "ETREAT" in entry.event
    assert "unconscious patient in the ER" in json.dumps(event)


def test_a_multi_patient_read_names_every_patient(hospital_a):
    first = hospital_a.clinician.create(patient(family="One"))
    second = hospital_a.clinician.create(patient(family="Two"))
    for someone in (first, second):
        hospital_a.clinician.create(observation(f"Patient/{someone['id']}"))
    audit = last_audit_pk()

    assert hospital_a.clinician.get("/fhir/Observation").json()["total"] == 2

    named = {entry.patient_id for entry in audit_entries_since(audit)}
    assert named == {None, first["id"], second["id"]}


# --- Medium: vread of a version that belonged to another patient ------------------------------

def test_each_version_is_checked_against_its_own_compartment(client, hospital_a):
    first = hospital_a.clinician.create(patient(family="First"))
    second = hospital_a.clinician.create(patient(family="Second"))
    moved = hospital_a.clinician.create(observation(f"Patient/{first['id']}", value=120))
    hospital_a.clinician.put(f"/fhir/Observation/{moved['id']}",
                             {**observation(f"Patient/{second['id']}"), "id": moved["id"]})
    second_patient = FhirClient(client, role_token("second-patient", Role.PATIENT, patient=second["id"],
                                                   scope="user/*.rs"))

    old = second_patient.get(f"/fhir/Observation/{moved['id']}/_history/1")
    current = second_patient.get(f"/fhir/Observation/{moved['id']}/_history/2")
    history = second_patient.get(f"/fhir/Observation/{moved['id']}/_history")

    assert old.status_code == 403 and "120" not in old.content.decode()  # its resource is visible: 403
    assert current.status_code == 200
    assert [e["resource"]["meta"]["versionId"] for e in history.json()["entry"]] == ["2"]
    assert ResourceVersion.objects.get(logical_id=moved["id"], version_id=1).patient_id == first["id"]


# --- Medium: server-owned ids ---------------------------------------------------------------

def test_endpoint_and_organization_ids_of_others_cannot_be_claimed(hospital_a, hospital_b):
    before = resource_count()
    endpoint = {"resourceType": "Endpoint", "status": "active", "address": "https://evil.example/dicomweb",
                "connectionType": {"code": "dicom-wado-rs"}, "payloadType": [{"text": "DICOM"}]}

    squat = hospital_b.integration.put(f"/fhir/Endpoint/dicomweb-{HOSPITAL_A}",
                                       {**endpoint, "id": f"dicomweb-{HOSPITAL_A}"})
    own_name = hospital_b.integration.put(f"/fhir/Endpoint/dicomweb-{HOSPITAL_B}",
                                          {**endpoint, "id": f"dicomweb-{HOSPITAL_B}"})
    in_bundle = hospital_b.integration.post("/fhir", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**endpoint, "id": "dicomweb"}, "request": {"method": "PUT", "url": "Endpoint/dicomweb"}}]})
    conditional = hospital_b.integration.put("/fhir/Endpoint?name=nowhere",
                                             {**endpoint, "id": f"dicomweb-{HOSPITAL_A}"})
    organization = hospital_b.integration.put(f"/fhir/Organization/{HOSPITAL_A}",
                                              {"resourceType": "Organization", "id": HOSPITAL_A, "name": "Fake A"})

    assert [r.status_code for r in (squat, own_name, in_bundle, organization)] == [403] * 4
    assert conditional.status_code in (400, 403)  # a body id with criteria that match nothing is refused
    assert resource_count() == before
    mine = hospital_a.integration.put(f"/fhir/Organization/{HOSPITAL_A}",
                                      {"resourceType": "Organization", "id": HOSPITAL_A, "name": "Hospital A"})
    assert mine.status_code == 201


# --- Medium: who may grant consent ------------------------------------------------------------

def test_the_dpo_cannot_grant_consent_on_a_patients_behalf(hospital_a, patient_of_a):
    before = resource_count()

    response = hospital_a.dpo.post("/fhir/Consent", permit(patient_of_a["id"], HOSPITAL_B))
    in_bundle = hospital_a.dpo.post("/fhir", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": permit(patient_of_a["id"], HOSPITAL_B), "request": {"method": "POST", "url": "Consent"}}]})

    assert response.status_code == 403
    assert in_bundle.json()["entry"][0]["response"]["status"].startswith("403")
    assert resource_count() == before and not ConsentToken.objects.exists()


def test_staff_record_a_grant_only_with_the_patients_signed_form(hospital_a, patient_of_a):
    unsigned = hospital_a.clinician.post("/fhir/Consent", permit(patient_of_a["id"], HOSPITAL_B))
    signed = hospital_a.clinician.post("/fhir/Consent", permit(
        patient_of_a["id"], HOSPITAL_B, performer=[{"reference": f"Patient/{patient_of_a['id']}"}],
        sourceAttachment={"contentType": "application/pdf", "url": "https://forms.example/consent/1"}))

    assert unsigned.status_code == 422 and signed.status_code == 201
    assert ConsentToken.objects.count() == 1


# --- Low: counts and audit entries that named patients they should not ------------------------

def test_total_estimate_counts_only_visible_rows(hospital_a, hospital_b, patient_of_a):
    for _ in range(3):
        hospital_a.clinician.create(observation(f"Patient/{patient_of_a['id']}"))

    estimate = hospital_b.clinician.get("/fhir/Observation?_total=estimate&_count=0")

    assert estimate.json()["total"] == 0


def test_another_hospitals_record_reads_exactly_like_an_unknown_id(hospital_b, patient_of_a):
    hidden = hospital_b.clinician.get(f"/fhir/Patient/{patient_of_a['id']}")
    unknown = hospital_b.clinician.get("/fhir/Patient/no-such-patient")

    assert hidden.status_code == unknown.status_code == 404
    assert outcome_of(hidden).replace(patient_of_a["id"], "?") == outcome_of(unknown).replace("no-such-patient", "?")


def test_anonymous_and_empty_foreign_requests_name_no_patient(client, hospital_b, patient_of_a):
    audit = last_audit_pk()

    assert client.get(f"/fhir/Patient/{patient_of_a['id']}").status_code == 401
    assert hospital_b.clinician.get(f"/fhir/Observation?patient={patient_of_a['id']}").json()["total"] == 0

    assert [entry.patient_id for entry in audit_entries_since(audit)] == [None, None]


def test_a_patient_another_hospital_registers_while_a_bundle_runs_is_not_adopted():
    """Found in review: the end-of-Bundle check used to hand B's early records to A's new Patient."""
    from ehr.fhir import FhirError, parse_resource
    from ehr.services.storage import Pending, insert_new, patients_settled_at_end

    def pending(resource: dict, organization_id: str) -> Pending:
        text = json.dumps(resource)
        return Pending(resource["resourceType"], resource.get("id") or "obs-early", text,
                       parse_resource(text, expected_type=resource["resourceType"]), "POST", organization_id)

    with pytest.raises(FhirError) as refused, patients_settled_at_end():
        insert_new([pending(observation("Patient/late"), HOSPITAL_B)])  # no Patient/late yet
        insert_new([pending({**patient(), "id": "late"}, HOSPITAL_A)])  # A registers it meanwhile

    assert refused.value.status == 422 and "Patient/late" in refused.value.diagnostics
