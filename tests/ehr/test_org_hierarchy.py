"""An integration's own Organization hierarchy, against a live server through fhirpy.

An ADT feed creates its facility's Organizations (hospital ``partOf`` the account's own,
lab and radiology ``partOf`` the hospital), its Practitioners and PractitionerRoles, then
registers Patients managed by those Organizations: all of it is the account's. Hospital B
sees none of it, may not make A's records its own (403), and cannot tell A's unlisted
Organizations from ones that do not exist (the same 422); a reference to nothing is 422 in a
single write and in a Bundle alike, unless the Bundle itself creates the target.
"""

from __future__ import annotations

import json
import re

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core.management import call_command
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ForbiddenError, OperationOutcome, ResourceNotFound
from oauth2_provider.models import Application

from access.models import AccessProfile, Role
from access.services import client_ensure, token_ensure
from ehr.models import Resource
from ledger.models import PatientOwner
from tests.ehr.conftest import integration_token, observation, patient

pytestmark = pytest.mark.django_db(transaction=True)

A, B = "hosp-a", "hosp-b"


def clinician_token(username: str, organization_id: str) -> str:
    user = get_user_model().objects.create_user(username, password=None)
    AccessProfile.objects.create(user=user, role=Role.CLINICIAN, organization_id=organization_id)
    app = client_ensure(name=f"{username}-app", owner=user, client_type=Application.CLIENT_PUBLIC,
                        grant_type=Application.GRANT_AUTHORIZATION_CODE, scopes="user/*.cruds")
    return token_ensure(user=user, application=app, scope="user/*.cruds").token


@pytest.fixture
def base(live_server) -> str:
    return f"{live_server.url}/fhir"


@pytest.fixture
def tokens(transactional_db) -> dict[str, str]:
    made = {"integration": integration_token("adt-a", A), "clinician": clinician_token("doc-a", A),
            "b": integration_token("adt-b", B)}
    for organization in (A, B):
        call_command("organization_ensure", organization)
    return made


@pytest.fixture(params=["integration", "clinician"])
def hospital_a(request, base, tokens) -> SyncFHIRClient:
    return SyncFHIRClient(base, authorization=f"Bearer {tokens[request.param]}")


@pytest.fixture
def hospital_b(base, tokens) -> SyncFHIRClient:
    return SyncFHIRClient(base, authorization=f"Bearer {tokens['b']}")


def organization(client: SyncFHIRClient, name: str, part_of: str) -> dict:
    created = client.resource("Organization", name=name, active=True,
                              identifier=[{"system": "urn:ids:org", "value": name}],
                              partOf={"reference": f"Organization/{part_of}"})
    created.save()
    return created


def facility(client: SyncFHIRClient) -> dict[str, dict]:
    """The ADT feed's first messages: the hierarchy, a practitioner and where they work."""
    hospital = organization(client, "General Hospital", A)
    lab = organization(client, "Central Lab", hospital.id)
    radiology = organization(client, "Radiology", hospital.id)
    practitioner = client.resource("Practitioner", name=[{"family": "House"}])
    practitioner.save()
    role = client.resource("PractitionerRole", practitioner={"reference": f"Practitioner/{practitioner.id}"},
                           organization={"reference": f"Organization/{lab.id}"})
    role.save()
    location = client.resource("Location", name="Ward 3",
                               managingOrganization={"reference": f"Organization/{radiology.id}"})
    location.save()
    return {"hospital": hospital, "lab": lab, "radiology": radiology, "practitioner": practitioner,
            "role": role, "location": location}


def chart(client: SyncFHIRClient, site: dict[str, dict]) -> dict[str, dict]:
    """A patient registered under the lab's parent hospital, admitted, with a result."""
    registered = client.resource("Patient", **patient(family="Hierarchy"),
                                 managingOrganization={"reference": f"Organization/{site['hospital'].id}"})
    registered.save()
    encounter = client.resource("Encounter", status="in-progress",
                                **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                             "code": "IMP"}},
                                subject={"reference": f"Patient/{registered.id}"},
                                serviceProvider={"reference": f"Organization/{site['hospital'].id}"},
                                location=[{"location": {"reference": f"Location/{site['location'].id}"}}])
    encounter.save()
    result = client.resource("Observation", **observation(f"Patient/{registered.id}"),
                             encounter={"reference": f"Encounter/{encounter.id}"},
                             performer=[{"reference": f"Practitioner/{site['practitioner'].id}"}])
    result.save()
    return {"patient": registered, "encounter": encounter, "observation": result}


def written(*resources: dict) -> set[str | None]:
    return {Resource.objects.get(resource_type=r.resource_type, logical_id=r.id).organization_id
            for r in resources}


def post(base: str, token: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{base}/{path}", data=json.dumps(body), timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})


# --- the hospital's own hierarchy --------------------------------------------------------------

def test_the_hierarchy_and_the_patients_under_it_are_the_accounts(hospital_a):
    site = facility(hospital_a)
    records = chart(hospital_a, site)

    assert written(*site.values(), *records.values()) == {A}
    assert list(PatientOwner.objects.filter(patient_id=records["patient"].id)
                .values_list("organization_id", flat=True)) == [A]
    assert hospital_a.reference("Patient", records["patient"].id).to_resource()["name"][0]["family"] == "Hierarchy"
    managed = hospital_a.resources("Patient").search(organization=site["hospital"].id).fetch_all()
    assert [p.id for p in managed] == [records["patient"].id]


def test_the_accounts_own_organization_is_a_resource_to_search_and_reference(hospital_a):
    found = hospital_a.resources("Organization").search(_id=A).fetch_all()

    assert [o.id for o in found] == [A]
    assert Resource.objects.get(resource_type="Organization", logical_id=A).organization_id == A


def test_access_seed_creates_its_organization_once(capsys, transactional_db):
    for _ in range(2):
        call_command("access_seed", "--organization", "seeded-hospital")
        assert json.loads(capsys.readouterr().out)  # the seed's JSON is still all its stdout

    rows = Resource.objects.filter(resource_type="Organization", logical_id="seeded-hospital")
    assert [(r.version_id, r.organization_id) for r in rows] == [(1, "seeded-hospital")]


# --- hospital B ----------------------------------------------------------------------------------

def test_hospital_b_reads_none_of_it(hospital_a, hospital_b):
    site = facility(hospital_a)
    records = chart(hospital_a, site)

    for resource in (*site.values(), *records.values()):
        with pytest.raises(ResourceNotFound):
            hospital_b.reference(resource.resource_type, resource.id).to_resource()
    assert hospital_b.resources("Organization").search(name="Central").fetch_all() == []


def test_hospital_b_may_not_make_records_the_account_organizations(hospital_b):
    before = Resource.objects.count()

    with pytest.raises(ForbiddenError):
        hospital_b.resource("Patient", **patient(), managingOrganization={"reference": f"Organization/{A}"}).save()
    with pytest.raises(ForbiddenError):
        organization(hospital_b, "Annex", A)

    assert Resource.objects.count() == before


def test_hospital_b_cannot_tell_as_lab_from_a_missing_organization(hospital_a, hospital_b):
    site = facility(hospital_a)
    before = Resource.objects.count()

    answers = []
    for target in (site["lab"].id, "no-such-organization"):
        for resource_type, element in (("Patient", "managingOrganization"), ("Organization", "partOf")):
            body = {**(patient() if resource_type == "Patient" else {"name": "Annex"}),
                    element: {"reference": f"Organization/{target}"}}
            with pytest.raises(OperationOutcome) as refused:
                hospital_b.resource(resource_type, **body).save()
            answers.append(json.dumps(refused.value.resource).replace(target, "ID"))

    assert answers[:2] == answers[2:]
    assert Resource.objects.count() == before


# --- references to nothing ----------------------------------------------------------------------

def test_a_reference_to_nothing_is_422_naming_the_element(hospital_a):
    with pytest.raises(OperationOutcome) as managed:
        hospital_a.resource("Patient", **patient(), managingOrganization={"reference": "Organization/gone"}).save()
    registered = hospital_a.resource("Patient", **patient())
    registered.save()
    with pytest.raises(OperationOutcome) as performed:
        hospital_a.resource("Observation", **observation(f"Patient/{registered.id}"),
                            performer=[{"reference": "Practitioner/gone"}]).save()

    assert [i["expression"] for i in managed.value.resource["issue"]] == [["Patient.managingOrganization"]]
    assert "Organization/gone" in managed.value.resource["issue"][0]["diagnostics"]
    assert [i["expression"] for i in performed.value.resource["issue"]] == [["Observation.performer"]]
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_external_contained_and_logical_references_are_not_checked(hospital_a):
    registered = hospital_a.resource("Patient", **patient(),
                                     generalPractitioner=[{"reference": "https://elsewhere.example/Practitioner/1"},
                                                          {"identifier": {"system": "urn:npi", "value": "1"}}],
                                     contained=[{"resourceType": "Organization", "id": "o1", "name": "Ext"}],
                                     managingOrganization={"reference": "#o1"})
    registered.save()

    assert written(registered) == {A}


def test_a_transaction_with_a_reference_to_nothing_writes_nothing(base, tokens):
    before = Resource.objects.count()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(family="One"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**patient(family="Two"), "managingOrganization": {"reference": "Organization/gone"}},
         "request": {"method": "POST", "url": "Patient"}},
    ]}

    response = post(base, tokens["integration"], "", bundle)

    assert response.status_code == 422, response.content
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1].resource.managingOrganization"]
    assert response.json()["issue"][0]["diagnostics"].startswith("entry[1] POST Patient: ")
    assert Resource.objects.count() == before


def test_a_batch_refuses_the_entry_alone(base, tokens):
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient(family="One"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**patient(family="Two"), "managingOrganization": {"reference": "Organization/gone"}},
         "request": {"method": "POST", "url": "Patient"}},
    ]}

    response = post(base, tokens["integration"], "", bundle)

    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["201 Created", "422 Unprocessable Entity"]
    outcome = response.json()["entry"][1]["response"]["outcome"]
    assert outcome["issue"][0]["expression"] == ["Patient.managingOrganization"]


def test_a_transaction_may_reference_what_it_creates(base, tokens):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:5f0d9d0e-7c1a-4c1e-9a56-000000000001",
         "resource": {"resourceType": "Organization", "name": "Hospital", "partOf": {"reference": f"Organization/{A}"}},
         "request": {"method": "POST", "url": "Organization"}},
        {"fullUrl": "urn:uuid:5f0d9d0e-7c1a-4c1e-9a56-000000000002",
         "resource": {"resourceType": "Organization", "name": "Lab",
                      "partOf": {"reference": "urn:uuid:5f0d9d0e-7c1a-4c1e-9a56-000000000001"}},
         "request": {"method": "POST", "url": "Organization"}},
        {"resource": {**patient(), "managingOrganization": {"reference": "Organization/ward-7"}},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Organization", "id": "ward-7", "name": "Ward 7",
                      "partOf": {"reference": "urn:uuid:5f0d9d0e-7c1a-4c1e-9a56-000000000002"}},
         "request": {"method": "PUT", "url": "Organization/ward-7"}},
    ]}

    response = post(base, tokens["integration"], "", bundle)

    assert response.status_code == 200, response.content
    ids = [re.match(r"(\w+)/([^/]+)", e["response"]["location"]).groups() for e in response.json()["entry"]]
    assert {Resource.objects.get(resource_type=t, logical_id=i).organization_id for t, i in ids} == {A}


def test_in_a_transaction_too_b_cannot_tell_as_lab_from_a_missing_organization(base, tokens, hospital_a):
    lab = facility(hospital_a)["lab"]
    before = Resource.objects.count()

    answers = []
    for target in (lab.id, "no-such-organization"):
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {**patient(), "managingOrganization": {"reference": f"Organization/{target}"}},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": {"resourceType": "Organization", "name": "Annex",
                          "partOf": {"reference": f"Organization/{target}"}},
             "request": {"method": "POST", "url": "Organization"}}]}
        response = post(base, tokens["b"], "", bundle)
        answers.append((response.status_code, response.text.replace(target, "ID")))

    assert answers[0] == answers[1] and answers[0][0] == 422
    assert Resource.objects.count() == before


# --- the partOf chain -----------------------------------------------------------------------------

def organization_stored(logical_id: str, part_of: str | None, owner: str | None) -> None:
    """Written by the node itself (no writer): an ownerless Organization unless it names one."""
    from ehr.services import resource_update

    body = {"resourceType": "Organization", "id": logical_id, "name": logical_id}
    if part_of:
        body["partOf"] = {"reference": f"Organization/{part_of}"}
    resource_update(resource_type="Organization", logical_id=logical_id, text=json.dumps(body),
                    organization_id=owner)


def test_the_chain_is_walked_up_to_an_owned_organization(transactional_db):
    from ehr.ownership import organization_owners

    organization_stored("leaf", "mid", None)
    organization_stored("mid", "top", None)
    organization_stored("top", None, A)

    assert organization_owners({"leaf", "mid", "top", "nowhere"}) == {"leaf": A, "mid": A, "top": A}


def test_a_partof_loop_ends_the_walk(transactional_db):
    from ehr.ownership import organization_owners

    organization_stored("loop-1", "loop-2", None)
    organization_stored("loop-2", "loop-1", None)

    assert organization_owners({"loop-1", "loop-2"}) == {}
