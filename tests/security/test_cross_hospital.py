"""Hospital B against hospital A: the same classes of hole as issue 11, found by a second review.

Every test asserts the secure behaviour. Those whose docstring says "Found in review" were
open holes when the review was made (fixed with it); the others are attacks tried and found
refused, kept as regression tests.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from access.models import AccessProfile, Role
from ehr.models import Resource
from ledger.models import ConsentDeny
from tests.ehr.conftest import FhirClient, observation, patient
from tests.imaging.conftest import role_token

from .conftest import HOSPITAL_A, HOSPITAL_B, audit_entries_since, last_audit_pk, resource_count
from .test_fhir_access_security import emergency, outcome_of, permit

pytestmark = pytest.mark.django_db


def transaction_of(*entries, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def signed(patient_id: str, grantee: str) -> dict:
    return permit(patient_id, grantee, performer=[{"reference": f"Patient/{patient_id}"}],
                  sourceAttachment={"contentType": "application/pdf", "url": "https://forms.example/c/1"})


def deny_all(patient_id: str) -> dict:
    consent = permit(patient_id, HOSPITAL_B)
    consent["provision"] = {"type": "deny"}
    return consent


def a_observation_id(patient_id: str) -> str:
    return Resource.objects.get(resource_type="Observation", patient_id=patient_id).logical_id


# --- Bundles: ids in a transaction POST's url; odd entry members -------------------------------

def test_transaction_post_url_id_of_another_hospital_is_no_oracle_and_no_500(hospital_b, patient_of_a):
    """Found in review: a transaction POST takes the id from request.url; another hospital's id collides (500)."""
    before = resource_count()
    taken = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": patient(), "request": {"method": "POST", "url": f"Patient/{patient_of_a['id']}"}}))
    free = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": patient(), "request": {"method": "POST", "url": "Patient/no-such-id-here"}}))

    assert taken.status_code < 500, taken.content[:300]
    assert taken.status_code == free.status_code
    assert Resource.objects.get(logical_id=patient_of_a["id"]).organization_id == HOSPITAL_A
    assert resource_count() in (before, before + 2)


def test_transaction_post_assigns_the_server_id_not_the_url_id(hospital_b):
    """Found in review: POST in a transaction creates Patient/<chosen> (FHIR: the server assigns the id)."""
    response = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": patient(), "request": {"method": "POST", "url": "Patient/chosen-by-client"}}))

    assert response.status_code in (200, 400), response.content[:300]
    assert not Resource.objects.filter(resource_type="Patient", logical_id="chosen-by-client").exists()


@pytest.mark.parametrize("url", ["Patient/" + "x" * 80, "Patient/bad id!"])
def test_transaction_post_url_with_an_invalid_id_is_4xx(hospital_b, url):
    """Found in review: the url id of a transaction POST is never validated (varchar overflow: 500)."""
    response = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": patient(), "request": {"method": "POST", "url": url}}))

    assert 200 <= response.status_code < 500, response.content[:300]
    assert not Resource.objects.filter(logical_id__in=["x" * 80, "bad id!"]).exists()


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("entry", [
    {"request": []},
    {"request": "GET metadata"},
    {"resource": patient(), "request": {"method": "POST", "url": "Patient", "ifNoneExist": 5}},
    {"resource": patient(), "request": {"method": "POST", "url": "Patient", "ifNoneExist": ["name=x"]}},
], ids=["request-array", "request-string", "ifNoneExist-number", "ifNoneExist-array"])
def test_odd_bundle_entry_members_are_4xx(hospital_b, kind, entry):
    """Found in review: for ifNoneExist of the wrong JSON type (500); a request that is not an object is refused (4xx)."""
    response = hospital_b.integration.post("/fhir", transaction_of(entry, kind=kind))

    assert response.status_code < 500, response.content[:300]
    if response.status_code == 200:
        assert not response.json()["entry"][0]["response"]["status"].startswith("5")


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_non_string_if_match_is_4xx(hospital_b, kind):
    """Found in review: an ifMatch that is not a string is a 500 (re on an int) once the resource exists."""
    own = hospital_b.integration.create(patient(family="Bee"))
    response = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": {**patient(family="Bee"), "id": own["id"]},
         "request": {"method": "PUT", "url": f"Patient/{own['id']}", "ifMatch": 1}}, kind=kind))

    assert response.status_code < 500, response.content[:300]
    if response.status_code == 200:
        assert not response.json()["entry"][0]["response"]["status"].startswith("5")


# --- Existence oracles on writes ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["delete", "patch"])
def test_delete_and_patch_of_another_hospitals_record_answer_like_an_unknown_id(hospital_b, patient_of_a,
                                                                                 method):
    """Found in review: DELETE/PATCH answer 403 for A's id and 404 for a free one: which ids exist at A."""
    hidden_id = a_observation_id(patient_of_a["id"])
    ops = [{"op": "replace", "path": "/status", "value": "cancelled"}]

    def attempt(logical_id):
        path = f"/fhir/Observation/{logical_id}"
        return hospital_b.clinician.delete(path) if method == "delete" else hospital_b.clinician.patch(path, ops)

    hidden, unknown = attempt(hidden_id), attempt("no-such-observation")

    assert hidden.status_code == unknown.status_code == 404
    assert outcome_of(hidden).replace(hidden_id, "?") == outcome_of(unknown).replace("no-such-observation", "?")
    row = Resource.objects.get(logical_id=hidden_id)
    assert row.version_id == 1 and not row.deleted


def test_writing_into_another_hospitals_patient_answers_like_an_unknown_patient(hospital_b, patient_of_a):
    """Found in review: an Observation for A's patient is 403, for a free id 422 "not a patient on this server":
    B confirms A's patient ids by writing (single requests and transactions alike)."""
    before = resource_count()
    hidden = hospital_b.clinician.post("/fhir/Observation", observation(f"Patient/{patient_of_a['id']}"))
    unknown = hospital_b.clinician.post("/fhir/Observation", observation("Patient/no-such-patient"))
    hidden_tx = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": observation(f"Patient/{patient_of_a['id']}"), "request": {"method": "POST", "url": "Observation"}}))
    unknown_tx = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": observation("Patient/no-such-patient"), "request": {"method": "POST", "url": "Observation"}}))

    assert hidden.status_code == unknown.status_code
    assert outcome_of(hidden).replace(patient_of_a["id"], "?") == outcome_of(unknown).replace("no-such-patient", "?")
    assert hidden_tx.status_code == unknown_tx.status_code
    assert resource_count() == before


def test_a_patient_user_cannot_probe_patient_ids_through_consent_writes(client, hospital_a, patient_of_a):
    """Found in review: the same oracle for a patient account: a Consent naming another patient is 403 if that
    patient exists, 422 if not."""
    other = hospital_a.clinician.create(patient(family="Other"))
    me = hospital_a.clinician.create(patient(family="Me"))
    patient_client = FhirClient(client, role_token("portal-me", Role.PATIENT, patient=me["id"]))

    existing = patient_client.post("/fhir/Consent", deny_all(other["id"]))
    missing = patient_client.post("/fhir/Consent", deny_all("no-such-patient"))

    assert existing.status_code == missing.status_code
    assert not Resource.objects.filter(resource_type="Consent").exists()


# --- Which patient's compartment a record lands in ----------------------------------------------

def test_a_record_lands_in_its_subjects_compartment_not_a_secondary_patients(client, hospital_a, patient_of_a):
    """Found in review: ``compartment_patient`` takes the first Patient reference among the compartment
    parameters in index order, so an Observation about Ann performed by Bob (another patient:
    a parent, a donor) is stored in Bob's compartment: Bob's portal account reads Ann's result,
    Ann's does not, and Bob's consent (not Ann's) opens it to another hospital."""
    bob = hospital_a.clinician.create(patient(family="Bob"))
    about_ann = hospital_a.clinician.create({**observation(f"Patient/{patient_of_a['id']}", value=140),
                                             "performer": [{"reference": f"Patient/{bob['id']}"}]})
    bob_portal = FhirClient(client, role_token("portal-bob", Role.PATIENT, patient=bob["id"]))

    assert Resource.objects.get(logical_id=about_ann["id"]).patient_id == patient_of_a["id"]
    assert bob_portal.get(f"/fhir/Observation/{about_ann['id']}").status_code == 404


# --- The DPO of hospital B and hospital A's records ---------------------------------------------

@pytest.fixture
def consent_of_a(hospital_a, patient_of_a) -> dict:
    """A's patient's signed consent to a third hospital."""
    return hospital_a.clinician.create(signed(patient_of_a["id"], "hospital-c"))


def test_the_dpo_of_another_hospital_does_not_read_its_consents(hospital_b, patient_of_a, consent_of_a):
    """Found in review: B's DPO reads and searches every Consent of A (patient ids, grantees, signed-form URL)."""
    read = hospital_b.dpo.get(f"/fhir/Consent/{consent_of_a['id']}")
    search = hospital_b.dpo.get("/fhir/Consent")
    by_patient = hospital_b.dpo.get(f"/fhir/Consent?patient={patient_of_a['id']}")

    assert read.status_code == 404
    assert search.json()["total"] == 0 and by_patient.json()["total"] == 0
    assert patient_of_a["id"] not in search.content.decode()


def test_the_dpo_of_another_hospital_cannot_withdraw_or_deny_its_consents(hospital_b, patient_of_a, consent_of_a):
    """Found in review: B's DPO deletes A's Consent, or records a deny for A's patient (both rewrite A's record
    and revoke the patient's grant to hospital C)."""
    deleted = hospital_b.dpo.delete(f"/fhir/Consent/{consent_of_a['id']}")
    denied = hospital_b.dpo.post("/fhir/Consent", deny_all(patient_of_a["id"]))
    withdrawn = hospital_b.dpo.put(f"/fhir/Consent/{consent_of_a['id']}",
                                   {**signed(patient_of_a["id"], "hospital-c"), "id": consent_of_a["id"],
                                    "status": "inactive"})

    assert deleted.status_code in (403, 404) and denied.status_code in (403, 404, 422)
    assert withdrawn.status_code in (403, 404)
    row = Resource.objects.get(logical_id=consent_of_a["id"])
    assert row.version_id == 1 and not row.deleted
    assert Resource.objects.filter(resource_type="Consent").count() == 1
    assert not ConsentDeny.objects.filter(patient_id=patient_of_a["id"]).exists()


def test_the_dpo_of_another_hospital_does_not_read_its_audit_log(hospital_a, hospital_b, patient_of_a):
    """Found in review: B's DPO reads every audit entry of A: who at A read which of A's patients, when."""
    hospital_a.clinician.get(f"/fhir/Patient/{patient_of_a['id']}")

    log = hospital_b.dpo.get(f"/fhir/AuditEvent?patient={patient_of_a['id']}")

    assert log.status_code in (200, 403)
    assert log.status_code == 403 or log.json()["total"] == 0
    assert "clin-a" not in log.content.decode()


# --- Ids reserved by accounts ------------------------------------------------------------------

@pytest.mark.parametrize("resource_type, link", [("Practitioner", "practitioner_id"), ("Patient", "patient_id")])
def test_ids_that_accounts_of_a_hospital_refer_to_cannot_be_claimed_by_another(hospital_b, resource_type, link):
    """Found in review: A's clinician account (fhirUser Practitioner/prac-a-1) or A's patient-portal account
    (Patient/portal-a-1) names a resource not written yet; B PUTs it first and owns what A's user
    is: A can no longer write it, and the patient account sees B's chart as its own."""
    user = get_user_model().objects.create_user(f"acct-{link}")
    role = Role.CLINICIAN if link == "practitioner_id" else Role.PATIENT
    logical_id = "prac-a-1" if link == "practitioner_id" else "portal-a-1"
    AccessProfile.objects.create(user=user, role=role, organization_id=HOSPITAL_A, **{link: logical_id})
    body = ({"resourceType": "Practitioner", "id": logical_id, "name": [{"family": "Impostor"}]}
            if resource_type == "Practitioner" else {**patient(family="Impostor"), "id": logical_id})

    squat = hospital_b.integration.put(f"/fhir/{resource_type}/{logical_id}", body)

    assert squat.status_code == 403
    assert not Resource.objects.filter(resource_type=resource_type, logical_id=logical_id).exists()


# --- Regression: attacks tried and found refused ----------------------------------------------

def test_moving_a_patient_between_hospitals_is_refused_both_ways(hospital_a, hospital_b, patient_of_a):
    pid = patient_of_a["id"]
    give = hospital_a.clinician.put(f"/fhir/Patient/{pid}", {
        **patient(family="Alpha"), "id": pid, "managingOrganization": {"reference": f"Organization/{HOSPITAL_B}"}})
    patch_give = hospital_a.clinician.patch(f"/fhir/Patient/{pid}", [
        {"op": "add", "path": "/managingOrganization", "value": {"reference": f"Organization/{HOSPITAL_B}"}}])
    take = hospital_b.clinician.put(f"/fhir/Patient/{pid}", {
        **patient(family="Alpha"), "id": pid, "managingOrganization": {"reference": f"Organization/{HOSPITAL_B}"}})
    planted = hospital_b.clinician.post("/fhir/Patient", {
        **patient(family="Bee"), "managingOrganization": {"reference": f"Organization/{HOSPITAL_A}"}})

    assert give.status_code == patch_give.status_code == 403
    assert take.status_code in (403, 404) and planted.status_code == 403
    assert set(Resource.objects.filter(patient_id=pid).values_list("organization_id", flat=True)) == {HOSPITAL_A}
    assert Resource.objects.get(logical_id=pid).version_id == 1


def test_moving_own_record_into_another_hospitals_compartment_is_refused(hospital_b, patient_of_a):
    own_patient = hospital_b.clinician.create(patient(family="Bee"))
    own = hospital_b.clinician.create(observation(f"Patient/{own_patient['id']}"))

    put = hospital_b.clinician.put(f"/fhir/Observation/{own['id']}",
                                   {**observation(f"Patient/{patient_of_a['id']}"), "id": own["id"]})
    patch = hospital_b.clinician.patch(f"/fhir/Observation/{own['id']}", [
        {"op": "replace", "path": "/subject/reference", "value": f"Patient/{patient_of_a['id']}"}])
    conditional = hospital_b.clinician.put(f"/fhir/Observation?_id={own['id']}",
                                           observation(f"Patient/{patient_of_a['id']}"))

    # answered as for a patient that does not exist (no oracle), and nothing moved
    assert put.status_code == patch.status_code == conditional.status_code == 422
    row = Resource.objects.get(logical_id=own["id"])
    assert (row.patient_id, row.organization_id, row.version_id) == (own_patient["id"], HOSPITAL_B, 1)


def test_a_secondary_compartment_reference_never_shares_a_record_across_hospitals(hospital_a, hospital_b,
                                                                                  patient_of_a):
    """Observation.performer = A's patient: the row is B's (or refused), and A's chart never shows it."""
    own_patient = hospital_b.clinician.create(patient(family="Bee"))
    response = hospital_b.clinician.post("/fhir/Observation", {
        **observation(f"Patient/{own_patient['id']}"), "performer": [{"reference": f"Patient/{patient_of_a['id']}"}]})

    assert response.status_code in (201, 403, 422)
    if response.status_code == 201:
        row = Resource.objects.get(logical_id=response.json()["id"])
        assert (row.patient_id, row.organization_id) == (own_patient["id"], HOSPITAL_B)
    everything = hospital_a.clinician.get(f"/fhir/Patient/{patient_of_a['id']}/$everything")
    assert everything.json()["total"] == 2
    chained = hospital_b.clinician.get("/fhir/Observation?performer:Patient.family=Alpha")
    assert chained.json()["total"] == 0


def test_patient_link_to_another_hospitals_patient_opens_nothing(hospital_a, hospital_b, patient_of_a):
    linked = hospital_b.clinician.create({**patient(family="Bee"), "link": [
        {"other": {"reference": f"Patient/{patient_of_a['id']}"}, "type": "seealso"}]})

    mine = hospital_b.clinician.get(f"/fhir/Patient/{linked['id']}/$everything")
    theirs = hospital_a.clinician.get(f"/fhir/Patient/{patient_of_a['id']}/$everything")
    via_link = hospital_b.clinician.get(f"/fhir/Patient?link=Patient/{patient_of_a['id']}&_include=Patient:link")

    assert mine.json()["total"] == 1 and theirs.json()["total"] == 2
    assert patient_of_a["id"] not in json.dumps(via_link.json()["entry"][1:] if via_link.json().get("entry") else [])
    assert all(e["resource"]["id"] != patient_of_a["id"] for e in via_link.json().get("entry", []))


@pytest.mark.parametrize("include", ["Observation:focus", "*", "Observation:focus:Patient"])
def test_includes_of_another_hospitals_resources_are_empty(hospital_b, patient_of_a, include):
    own = hospital_b.clinician.create({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                                       "focus": [{"reference": f"Patient/{patient_of_a['id']}"}]})

    plain = hospital_b.clinician.get(f"/fhir/Observation?_id={own['id']}&_include={include}")
    iterate = hospital_b.clinician.get(f"/fhir/Observation?_id={own['id']}&_include:iterate={include}"
                                       "&_revinclude:iterate=Observation:subject")

    for response in (plain, iterate):
        assert [e["resource"]["id"] for e in response.json()["entry"]] == [own["id"]]


def test_revinclude_and_type_searches_show_nothing_of_another_hospital(hospital_b, patient_of_a):
    for path in (f"/fhir/Patient?_id={patient_of_a['id']}&_revinclude=*",
                 f"/fhir?_type=Patient,Observation&_id={patient_of_a['id']}",
                 f"/fhir/Observation?subject={patient_of_a['id']}&_summary=count",
                 f"/fhir/Observation?subject={patient_of_a['id']}&_elements=status&_sort=-date",
                 "/fhir/Observation?_sort=subject,-_lastUpdated&_total=accurate",
                 "/fhir/_history?_since=2000-01-01T00:00:00Z&_count=500"):
        response = hospital_b.clinician.get(path)
        assert response.status_code == 200, (path, response.content[:300])
        assert response.json()["total"] == 0, path


def test_everything_and_history_of_another_hospitals_patient_are_404(hospital_b, patient_of_a):
    pid = patient_of_a["id"]
    for path in (f"/fhir/Patient/{pid}/$everything?_count=0", f"/fhir/Patient/{pid}/$everything?_offset=1",
                 f"/fhir/Patient/{pid}/_history?_since=2000-01-01T00:00:00Z", f"/fhir/Patient/{pid}/_history/1"):
        response = hospital_b.clinician.get(path)
        assert response.status_code == 404, path


def test_conditional_writes_never_match_another_hospitals_rows(hospital_a, hospital_b, patient_of_a):
    hospital_a.clinician.put(f"/fhir/Patient/{patient_of_a['id']}", {
        **patient(family="Alpha", given="Ann", birth="1961-02-03"), "id": patient_of_a["id"],
        "identifier": [{"system": "urn:mrn", "value": "MRN-7"}]})

    created = hospital_b.clinician.post("/fhir/Patient", patient(family="Bee"),
                                        HTTP_IF_NONE_EXIST="identifier=urn:mrn|MRN-7")
    updated = hospital_b.clinician.put("/fhir/Patient?identifier=urn:mrn|MRN-7", patient(family="Bee2"))
    in_bundle = hospital_b.integration.post("/fhir", transaction_of(
        {"resource": patient(family="Bee3"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|MRN-7"}}))

    assert created.status_code == updated.status_code == 201
    assert in_bundle.json()["entry"][0]["response"]["status"].startswith("201")
    assert Resource.objects.get(logical_id=patient_of_a["id"]).version_id == 2


def test_bundle_get_entries_answer_like_the_same_reads_alone(hospital_b, patient_of_a):
    pid = patient_of_a["id"]
    response = hospital_b.clinician.post("/fhir", transaction_of(
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/_history/1"}},
        {"request": {"method": "GET", "url": f"Patient/{pid}/$everything"}},
        {"request": {"method": "GET", "url": f"Observation?patient={pid}"}}, kind="batch"))

    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses[:3] == ["404", "404", "404"]
    assert "Alpha" not in response.content.decode()


def test_break_glass_never_opens_writes_anywhere(hospital_b, patient_of_a):
    before = resource_count()
    pid = patient_of_a["id"]
    hidden_id = a_observation_id(pid)

    single = hospital_b.clinician.post("/fhir/Observation", observation(f"Patient/{pid}"), **emergency())
    update = hospital_b.clinician.put(f"/fhir/Observation/{hidden_id}",
                                      {**observation(f"Patient/{pid}"), "id": hidden_id}, **emergency())
    delete = hospital_b.clinician.delete(f"/fhir/Observation/{hidden_id}", **emergency())
    bundle = hospital_b.clinician.post("/fhir", transaction_of(
        {"resource": {**observation(f"Patient/{pid}"), "id": hidden_id},
         "request": {"method": "PUT", "url": f"Observation/{hidden_id}"}}), **emergency())
    conditional = hospital_b.clinician.post("/fhir/Observation", observation(f"Patient/{pid}"),
                                            HTTP_IF_NONE_EXIST=f"patient={pid}", **emergency())

    for response in (single, update, delete, bundle, conditional):
        assert response.status_code in (403, 404, 422), response.content[:200]
    assert resource_count() == before
    assert Resource.objects.get(logical_id=hidden_id).version_id == 1


def test_a_patient_account_sees_only_its_compartment(client, hospital_a, hospital_b, patient_of_a):
    own_b = hospital_b.clinician.create(patient(family="Bee"))
    hospital_b.clinician.create({**observation(f"Patient/{own_b['id']}"),
                                 "focus": [{"reference": f"Patient/{patient_of_a['id']}"}]})
    me = FhirClient(client, role_token("portal-ann", Role.PATIENT, patient=patient_of_a["id"]))

    everything = me.get(f"/fhir/Patient/{patient_of_a['id']}/$everything")
    search = me.get("/fhir/Observation")
    other = me.get(f"/fhir/Patient/{own_b['id']}")
    write = me.post("/fhir/Observation", observation(f"Patient/{patient_of_a['id']}"))

    assert everything.json()["total"] == 2 and search.json()["total"] == 1
    assert other.status_code == 404 and write.status_code == 403


def test_a_clinician_token_with_only_patient_scopes_sees_nothing(client, hospital_a, patient_of_a):
    token = role_token("clin-a-patient-scope", Role.CLINICIAN, organization=HOSPITAL_A, scope="patient/*.rs")
    scoped = FhirClient(client, token)

    assert scoped.get(f"/fhir/Patient/{patient_of_a['id']}").status_code == 404
    assert scoped.get("/fhir/Observation").json()["total"] == 0


def test_consent_from_a_patient_lets_the_grantee_read_never_write(client, hospital_a, hospital_b, patient_of_a):
    audit = last_audit_pk()
    pid = patient_of_a["id"]
    me = FhirClient(client, role_token("portal-ann2", Role.PATIENT, patient=pid))
    assert me.post("/fhir/Consent", permit(pid, HOSPITAL_B)).status_code == 201
    hidden_id = a_observation_id(pid)

    write = hospital_b.clinician.put(f"/fhir/Observation/{hidden_id}",
                                     {**observation(f"Patient/{pid}"), "id": hidden_id})
    create = hospital_b.clinician.post("/fhir/Observation", observation(f"Patient/{pid}"))

    assert write.status_code in (403, 404) and create.status_code in (403, 422)
    assert Resource.objects.get(logical_id=hidden_id).version_id == 1
    assert all(entry.outcome in ("0", "4") for entry in audit_entries_since(audit))
