"""Authorization: role rules ANDed with SMART scopes, per role and interaction, and no leaks.

Two hospitals (A and B), each with a patient and an Observation. Every denied case checks
the 403 OperationOutcome, that nothing was written and that the refusal was audited.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from oauth2_provider.models import Application

from access.models import AccessProfile, Role
from access.services import client_ensure, token_ensure
from ehr import services
from ehr.models import Resource, ResourceVersion
from ledger.models import AuditEntry
from tests.ehr.conftest import FhirClient, observation, patient

pytestmark = pytest.mark.django_db

A, B = "hosp-a", "hosp-b"
INTERACTIONS = ("read", "vread", "search", "history", "create", "update", "patch", "delete", "everything")
WRITES = ("create", "update", "patch", "delete")
# How another hospital's patient's records answer each interaction (reads, patch, delete: as unknown).
HIDDEN_AS = {"create": "processing", "update": "forbidden"}


@dataclass
class World:
    patient_a: str
    patient_b: str
    obs_a: str
    obs_b: str


def _seed(resource: dict, organization_id: str) -> str:
    outcome = services.resource_create(resource_type=resource["resourceType"], text=json.dumps(resource),
                                       organization_id=organization_id)
    return outcome.resource.logical_id


@pytest.fixture
def world(db) -> World:
    pa = _seed(patient("Alpha", managingOrganization={"reference": f"Organization/{A}"}), A)
    pb = _seed(patient("Beta", managingOrganization={"reference": f"Organization/{B}"}), B)
    return World(pa, pb, _seed(observation(f"Patient/{pa}"), A), _seed(observation(f"Patient/{pb}"), B))


def make_client(client, username: str, role: str | None, *, scope: str = "user/*.cruds",
                staff: bool = False, **links) -> FhirClient:
    user = get_user_model().objects.create_user(username, password=None, is_staff=staff)
    if role is not None:
        AccessProfile.objects.create(user=user, role=role, **links)
    app = client_ensure(name=f"{username}-app", owner=user, client_type=Application.CLIENT_PUBLIC,
                        grant_type=Application.GRANT_AUTHORIZATION_CODE, scopes=scope)
    return FhirClient(client, token_ensure(user=user, application=app, scope=scope).token)


@pytest.fixture
def as_role(client, world):
    def build(role: str, *, scope: str = "user/*.cruds", organization: str = A) -> FhirClient:
        if role == "patient":
            return make_client(client, "pat", Role.PATIENT, scope=scope.replace("user/", "patient/"),
                               patient_id=world.patient_a)
        if role == "admin":
            return make_client(client, "admin", None, scope=scope, staff=True)
        links = {"organization_id": organization} if role in (Role.CLINICIAN, Role.INTEGRATION) else {}
        if role == Role.INTEGRATION:
            scope = scope.replace("user/", "system/")
        return make_client(client, f"{role}-{organization}", role, scope=scope, **links)

    return build


def perform(fhir: FhirClient, interaction: str, patient_id: str, obs_id: str, **headers):
    obs_path = f"/fhir/Observation/{obs_id}"
    if interaction == "read":
        return fhir.get(obs_path, **headers)
    if interaction == "vread":
        return fhir.get(f"{obs_path}/_history/1", **headers)
    if interaction == "search":
        return fhir.get(f"/fhir/Observation?patient={patient_id}", **headers)
    if interaction == "history":
        return fhir.get(f"{obs_path}/_history", **headers)
    if interaction == "everything":
        return fhir.get(f"/fhir/Patient/{patient_id}/$everything", **headers)
    if interaction == "create":
        return fhir.post("/fhir/Observation", observation(f"Patient/{patient_id}", value=90), **headers)
    if interaction == "update":
        return fhir.put(obs_path, {**observation(f"Patient/{patient_id}", value=91), "id": obs_id}, **headers)
    if interaction == "patch":
        return fhir.patch(obs_path, [{"op": "replace", "path": "/status", "value": "amended"}], **headers)
    return fhir.delete(obs_path, **headers)


def snapshot() -> tuple:
    return (Resource.objects.count(), ResourceVersion.objects.count(),
            sorted(Resource.objects.values_list("logical_id", "version_id", "deleted")))


# How a refusal answers, so that it tells nothing another hospital may not know: a resource the
# caller may not see answers as an unknown id (404); a record written for another hospital's
# patient as one for a patient that does not exist (422); anything else is 403.
REFUSALS = {"forbidden": 403, "not-found": 404, "processing": 422}


def assert_denied(response, before: tuple, *, as_if: str = "forbidden") -> None:
    assert response.status_code == REFUSALS[as_if], response.content
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == as_if
    assert snapshot() == before
    assert AuditEntry.objects.order_by("-id").first().outcome == "4"


def assert_allowed(response, interaction: str) -> None:
    assert response.status_code in (200, 201, 204), response.content
    assert AuditEntry.objects.order_by("-id").first().outcome == "0"


# --- role × interaction -----------------------------------------------------------------------

@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.INTEGRATION])
@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_care_roles_work_within_their_organization(as_role, world, role, interaction):
    fhir = as_role(role)

    response = perform(fhir, interaction, world.patient_a, world.obs_a)

    assert_allowed(response, interaction)
    if interaction == "search":
        assert response.json()["total"] == 1


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.INTEGRATION])
@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_care_roles_are_refused_another_hospitals_patient(as_role, world, role, interaction):
    fhir = as_role(role)
    before = snapshot()

    response = perform(fhir, interaction, world.patient_b, world.obs_b)

    if interaction == "search":  # a search is filtered, not refused: the other hospital's data is absent
        assert response.status_code == 200 and response.json()["total"] == 0
        assert "entry" not in response.json() or response.json()["entry"] == []
    else:
        assert_denied(response, before, as_if=HIDDEN_AS.get(interaction, "not-found"))


def test_a_clinician_cannot_file_a_record_into_another_hospitals_patient_by_update(as_role, world):
    fhir = as_role(Role.CLINICIAN)
    before = snapshot()

    response = fhir.put(f"/fhir/Observation/{world.obs_a}",
                        {**observation(f"Patient/{world.patient_b}"), "id": world.obs_a})

    assert_denied(response, before, as_if="processing")


def test_a_clinician_cannot_create_a_patient_managed_by_another_hospital(as_role):
    fhir = as_role(Role.CLINICIAN)
    before = snapshot()

    response = fhir.post("/fhir/Patient", patient(managingOrganization={"reference": f"Organization/{B}"}))

    assert_denied(response, before)


@pytest.mark.parametrize("interaction", ("read", "vread", "search", "history", "everything"))
def test_a_patient_reads_their_own_compartment(as_role, world, interaction):
    fhir = as_role("patient")

    response = perform(fhir, interaction, world.patient_a, world.obs_a)

    assert_allowed(response, interaction)


@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_a_patient_is_refused_other_records_and_all_writes(as_role, world, interaction):
    fhir = as_role("patient")
    before = snapshot()

    response = perform(fhir, interaction, world.patient_b, world.obs_b)

    if interaction == "search":
        assert response.status_code == 200 and response.json()["total"] == 0
    else:
        assert_denied(response, before, as_if="forbidden" if interaction in WRITES else "not-found")


@pytest.mark.parametrize("interaction", WRITES)
def test_a_patient_may_not_write_even_their_own_record(as_role, world, interaction):
    fhir = as_role("patient")
    before = snapshot()

    assert_denied(perform(fhir, interaction, world.patient_a, world.obs_a), before)


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.DPO, "admin"])
@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_roles_without_chart_access_are_refused_everything(as_role, world, role, interaction):
    fhir = as_role(role)
    before = snapshot()

    assert_denied(perform(fhir, interaction, world.patient_a, world.obs_a), before)


def test_a_user_without_profile_has_no_access(client, world):
    fhir = make_client(client, "nobody", None)
    before = snapshot()

    assert_denied(fhir.get(f"/fhir/Patient/{world.patient_a}"), before)


def test_a_transaction_entry_outside_the_rules_refuses_the_whole_bundle(as_role, world):
    fhir = as_role(Role.CLINICIAN)
    before = snapshot()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient/{world.patient_a}"), "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation(f"Patient/{world.patient_b}"), "request": {"method": "POST", "url": "Observation"}},
    ]}

    response = fhir.post("/fhir", bundle)

    assert_denied(response, before, as_if="processing")


def test_a_batch_entry_outside_the_rules_fails_alone(as_role, world):
    fhir = as_role(Role.CLINICIAN)
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": f"Observation/{world.obs_b}"}},
        {"request": {"method": "DELETE", "url": f"Observation/{world.obs_a}"}},
    ]}

    response = fhir.post("/fhir", bundle)

    statuses = [entry["response"]["status"] for entry in response.json()["entry"]]
    assert statuses == ["404 Not Found", "204 No Content"]
    assert not Resource.objects.get(logical_id=world.obs_b).deleted


# --- break the glass ------------------------------------------------------------------------

def test_break_the_glass_is_allowed_flagged_and_reported(as_role, world):
    fhir = as_role(Role.CLINICIAN)

    response = fhir.get(f"/fhir/Patient/{world.patient_b}", HTTP_CARRACK_BREAK_GLASS="unconscious in ER")

    assert response.status_code == 200
    entry = AuditEntry.objects.order_by("-id").first()
    event = json.loads(entry.event)
    assert event["meta"]["security"][0]["code"] == "BTG"
    assert any(p.get("text") == "unconscious in ER" for p in event["purposeOfEvent"])
    out = StringIO()
    call_command("break_glass_report", "--since", "2000-01-01T00:00:00Z", stdout=out, stderr=StringIO())
    assert f"Patient/{world.patient_b}" in out.getvalue()
    assert "unconscious in ER" in out.getvalue() and "clinician-hosp-a" in out.getvalue()


def test_ordinary_accesses_are_not_in_the_break_glass_report(as_role, world):
    as_role(Role.CLINICIAN).get(f"/fhir/Patient/{world.patient_a}")
    out = StringIO()

    call_command("break_glass_report", stdout=out, stderr=StringIO())

    assert out.getvalue() == ""


def test_break_the_glass_needs_a_reason(as_role, world):
    response = as_role(Role.CLINICIAN).get(f"/fhir/Patient/{world.patient_b}", HTTP_CARRACK_BREAK_GLASS=" ")

    assert response.status_code == 400
    assert AuditEntry.objects.order_by("-id").first().outcome == "4"


@pytest.mark.parametrize("role", ["patient", Role.RESEARCHER, Role.INTEGRATION])
def test_only_clinicians_may_break_the_glass(as_role, world, role):
    before = snapshot()

    response = as_role(role).get(f"/fhir/Patient/{world.patient_b}", HTTP_CARRACK_BREAK_GLASS="emergency")

    assert_denied(response, before)


# --- SMART scopes ---------------------------------------------------------------------------

def test_scopes_narrow_what_the_role_allows(as_role, world):
    fhir = as_role(Role.CLINICIAN, scope="user/Observation.r")
    before = snapshot()

    assert fhir.get(f"/fhir/Observation/{world.obs_a}").status_code == 200
    assert_denied(fhir.get(f"/fhir/Patient/{world.patient_a}"), before)
    assert_denied(fhir.get("/fhir/Observation"), before)
    assert_denied(fhir.post("/fhir/Observation", observation(f"Patient/{world.patient_a}")), before)


def test_everything_returns_only_the_types_the_scopes_allow(as_role, world):
    fhir = as_role(Role.CLINICIAN, scope="user/Patient.r")

    body = fhir.get(f"/fhir/Patient/{world.patient_a}/$everything").json()

    assert body["total"] == 1
    assert [e["resource"]["resourceType"] for e in body["entry"]] == ["Patient"]


# --- no leaks through totals, paging, includes, history -------------------------------------

@pytest.fixture
def crowded(world) -> World:
    """Hospital B has three more Observations with the same code; A has one more."""
    for _ in range(3):
        _seed(observation(f"Patient/{world.patient_b}", code="1234-5"), B)
    _seed(observation(f"Patient/{world.patient_a}", code="1234-5"), A)
    _seed(observation(f"Patient/{world.patient_a}", code="1234-5"), A)
    return world


def test_totals_and_paging_count_only_visible_resources(as_role, crowded):
    fhir = as_role(Role.CLINICIAN)

    first = fhir.get("/fhir/Observation?code=1234-5&_count=1&_total=accurate").json()
    second = fhir.get("/fhir/Observation?code=1234-5&_count=1&_offset=1&_total=accurate").json()
    counted = fhir.get("/fhir/Observation?code=1234-5&_summary=count").json()

    assert first["total"] == second["total"] == counted["total"] == 2
    assert "next" in [link["relation"] for link in first["link"]]
    assert "next" not in [link["relation"] for link in second["link"]]
    assert "entry" not in counted


def test_system_search_and_history_hide_other_hospitals(as_role, crowded):
    fhir = as_role(Role.CLINICIAN)
    hidden = set(Resource.objects.filter(organization_id=B).values_list("logical_id", flat=True))

    searched = fhir.get("/fhir?_type=Observation,Patient&_count=100&_total=accurate").json()
    history = fhir.get("/fhir/_history?_count=100").json()
    type_history = fhir.get("/fhir/Observation/_history?_count=100").json()

    assert searched["total"] == 4  # patient A, obs A and two more
    for bundle in (searched, history, type_history):
        ids = {e["resource"]["id"] for e in bundle.get("entry", []) if "resource" in e}
        assert ids and not ids & hidden
    assert history["total"] == 4 and type_history["total"] == 3


def test_includes_and_revincludes_hide_what_the_caller_may_not_see(as_role, world):
    practitioner_b = _seed({"resourceType": "Practitioner", "name": [{"family": "Other"}]}, B)
    shared = _seed(observation(f"Patient/{world.patient_a}", performer=[{"reference": f"Practitioner/{practitioner_b}"}]), A)
    focus_b = _seed(observation(f"Patient/{world.patient_b}", focus=[{"reference": f"Patient/{world.patient_a}"}]), B)
    fhir = as_role(Role.CLINICIAN)

    included = fhir.get(f"/fhir/Observation?_id={shared}&_include=Observation:performer").json()
    revincluded = fhir.get(f"/fhir/Patient?_id={world.patient_a}&_revinclude=Observation:focus"
                           "&_revinclude=Observation:subject").json()

    assert [e["resource"]["id"] for e in included["entry"]] == [shared]
    ids = {e["resource"]["id"] for e in revincluded["entry"]}
    assert focus_b not in ids and {world.patient_a, world.obs_a, shared} <= ids


def test_everything_of_another_hospitals_patient_is_refused_not_emptied(as_role, world):
    before = snapshot()

    assert_denied(as_role(Role.CLINICIAN).get(f"/fhir/Patient/{world.patient_b}/$everything"), before, as_if="not-found")


# --- AuditEvent -----------------------------------------------------------------------------

def test_a_patient_sees_who_accessed_their_record(as_role, world):
    as_role(Role.CLINICIAN).get(f"/fhir/Patient/{world.patient_a}")
    as_role(Role.CLINICIAN, organization=B).get(f"/fhir/Patient/{world.patient_b}")
    fhir = as_role("patient")

    response = fhir.get(f"/fhir/AuditEvent?patient={world.patient_a}")
    mine = fhir.get("/fhir/AuditEvent").json()

    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "searchset" and body["total"] == 1
    event = body["entry"][0]["resource"]
    assert event["resourceType"] == "AuditEvent"
    assert event["agent"][0]["who"]["identifier"]["value"] == "clinician-hosp-a"
    assert fhir.get(f"/fhir/AuditEvent/{event['id']}").json()["id"] == event["id"]
    # the patient's own first search is now in their log too
    assert mine["total"] == 2


def test_a_patient_sees_the_writes_a_hospital_system_made_to_their_record_in_a_bundle(as_role, world):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation(f"Patient/{world.patient_a}"), "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "DELETE", "url": f"Observation/{world.obs_a}"}},
    ]}
    assert as_role(Role.INTEGRATION).post("/fhir", bundle).status_code == 200
    fhir = as_role("patient")

    body = fhir.get(f"/fhir/AuditEvent?patient={world.patient_a}").json()

    assert body["total"] == 1
    event = body["entry"][0]["resource"]
    assert event["agent"][0]["who"]["identifier"]["value"] == f"integration-{A}"
    assert event["subtype"][0]["code"] == "transaction"
    written = {e["what"]["reference"].split("/")[0] + ":" + e["lifecycle"]["code"]
               for e in event["entity"] if "lifecycle" in e}
    assert written == {"Observation:1", "Observation:14"}


def test_a_patient_may_not_read_another_patients_audit_events(as_role, world):
    as_role(Role.CLINICIAN, organization=B).get(f"/fhir/Patient/{world.patient_b}")
    other = AuditEntry.objects.get(patient_id=world.patient_b)
    fhir = as_role("patient")

    assert fhir.get(f"/fhir/AuditEvent?patient={world.patient_b}").status_code == 403
    assert fhir.get(f"/fhir/AuditEvent/{other.pk}").status_code == 403
    assert AuditEntry.objects.order_by("-id").first().outcome == "4"


def test_the_dpo_sees_all_audit_events_with_paging(as_role, world):
    as_role(Role.CLINICIAN).get(f"/fhir/Patient/{world.patient_a}")
    as_role(Role.CLINICIAN, organization=B).get(f"/fhir/Patient/{world.patient_b}")
    fhir = as_role(Role.DPO)

    page = fhir.get("/fhir/AuditEvent?_count=1").json()
    about_b = fhir.get(f"/fhir/AuditEvent?patient={world.patient_b}").json()

    assert page["total"] == 2 and len(page["entry"]) == 1
    assert "next" in [link["relation"] for link in page["link"]]
    assert about_b["total"] == 1


@pytest.mark.parametrize("role", [Role.CLINICIAN, Role.RESEARCHER, Role.INTEGRATION, "admin"])
def test_other_roles_may_not_read_the_audit_log(as_role, world, role):
    response = as_role(role).get(f"/fhir/AuditEvent?patient={world.patient_a}")

    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"


# --- found in review: break-the-glass writes, conditional probing -------------------------------

def test_breaking_the_glass_never_opens_writes(as_role, world):
    fhir = as_role(Role.CLINICIAN)
    path = f"/fhir/Patient/{world.patient_b}"
    taken = {**fhir.get(path, HTTP_CARRACK_BREAK_GLASS="ER").json(),
             "managingOrganization": {"reference": f"Organization/{A}"}}
    before = snapshot()

    response = fhir.put(path, taken, HTTP_CARRACK_BREAK_GLASS="ER")

    assert_denied(response, before)
    assert Resource.objects.get(logical_id=world.obs_b).organization_id == B


def test_conditional_create_does_not_reveal_another_hospitals_patient(as_role, world):
    fhir_b = as_role(Role.CLINICIAN, organization=B)
    ident = {"identifier": [{"system": "urn:ssn", "value": "123-45-6789"}]}
    assert fhir_b.post("/fhir/Patient", patient("Secret", **ident)).status_code == 201
    fhir_a = as_role(Role.CLINICIAN)

    response = fhir_a.post("/fhir/Patient", patient("Mine", **ident),
                           HTTP_IF_NONE_EXIST="identifier=urn:ssn|123-45-6789")

    assert response.status_code == 201
    assert response.json()["name"][0]["family"] == "Mine"


def test_conditional_update_never_replaces_another_hospitals_resource(as_role, world):
    fhir_a = as_role(Role.CLINICIAN)

    response = fhir_a.put("/fhir/Patient?family=beta", patient("Alpha2"))

    assert response.status_code == 201
    assert world.patient_b not in response.content.decode()
    assert Resource.objects.get(logical_id=world.patient_b).version_id == 1


def test_patient_scopes_limit_a_clinician_token_to_a_patient_context(as_role, world):
    fhir = as_role(Role.CLINICIAN, scope="patient/*.rs")

    search = fhir.get("/fhir/Observation")
    read = fhir.get(f"/fhir/Observation/{world.obs_a}")

    assert search.status_code == 200 and search.json()["total"] == 0
    assert read.status_code == 404
