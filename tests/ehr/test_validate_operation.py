"""``$validate``: every issue of the write it asks about, nothing written, audited, authorized as the write."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from oauth2_provider.models import Application

from access.models import AccessProfile, Role
from access.services import client_ensure, token_ensure
from ehr.models import Resource
from ledger.models import AuditEntry
from tests.ehr.conftest import FhirClient, observation, patient

pytestmark = pytest.mark.django_db


def token(username: str, *, role: str = Role.INTEGRATION, scope: str = "system/*.cruds",
          organization: str = "test-hospital") -> str:
    user = get_user_model().objects.create_user(username, password=None)
    AccessProfile.objects.create(user=user, role=role, organization_id=organization)
    client = client_ensure(name=f"{username}-client", owner=user, client_type=Application.CLIENT_CONFIDENTIAL,
                           grant_type=Application.GRANT_CLIENT_CREDENTIALS, scopes=scope)
    return token_ensure(user=None, application=client, scope=scope).token


def issues(response) -> list[tuple[str, str, list[str]]]:
    assert response.json()["resourceType"] == "OperationOutcome"
    return [(i["severity"], i["code"], i.get("expression", [])) for i in response.json()["issue"]]


def parameters(resource: dict | None, mode: str | None = None) -> dict:
    parameter = [{"name": "resource", "resource": resource}] if resource else []
    if mode:
        parameter.append({"name": "mode", "valueCode": mode})
    return {"resourceType": "Parameters", "parameter": parameter}


def test_a_valid_resource_answers_one_information_issue_and_writes_nothing(fhir):
    response = fhir.post("/fhir/Patient/$validate", patient(gender="female"))

    assert response.status_code == 200
    assert issues(response) == [("information", "informational", [])]
    assert not Resource.objects.exists()


def test_every_issue_is_listed_not_only_the_first(fhir):
    bad = patient(gender="robot", birthDate="not-a-date", name=[{"use": "nickname-ish", "family": "X"}])

    response = fhir.post("/fhir/Patient/$validate", bad)

    assert response.status_code == 200
    assert sorted(issues(response)) == [("error", "code-invalid", ["Patient.gender"]),
                                        ("error", "code-invalid", ["Patient.name[0].use"]),
                                        ("error", "value", ["birthDate"])]
    assert not Resource.objects.exists()


def test_parameters_with_mode_create(fhir):
    owner = fhir.create(patient())
    sent = parameters(observation(f"Patient/{owner['id']}", status="not-a-status"), "create")

    response = fhir.post("/fhir/Observation/$validate", sent)

    assert issues(response) == [("error", "code-invalid", ["Observation.status"])]
    assert not Resource.objects.filter(resource_type="Observation").exists()


def test_mode_update_checks_the_id_against_the_url(fhir):
    created = fhir.create(patient())
    path = f"/fhir/Patient/{created['id']}/$validate"

    same = fhir.post(path + "?mode=update", created)
    other = fhir.post(path, parameters({**created, "id": "someone-else"}, "update"))

    assert issues(same) == [("information", "informational", [])]
    assert issues(other) == [("error", "invalid", ["Patient.id"])]
    assert Resource.objects.get(logical_id=created["id"]).version_id == 1


def test_mode_delete_needs_no_resource_and_deletes_nothing(fhir):
    created = fhir.create(patient())

    response = fhir.post(f"/fhir/Patient/{created['id']}/$validate?mode=delete", "")

    assert issues(response) == [("information", "informational", [])]
    assert fhir.get(f"/fhir/Patient/{created['id']}").status_code == 200


def test_mode_delete_of_what_does_not_exist_is_404_and_at_type_level_400(fhir):
    assert fhir.post("/fhir/Patient/nobody/$validate?mode=delete", "").status_code == 404
    assert fhir.post("/fhir/Patient/$validate?mode=delete", "").status_code == 400


def test_an_unknown_mode_a_missing_resource_and_a_get_are_refused(fhir):
    assert fhir.post("/fhir/Patient/$validate?mode=merge", patient()).status_code == 400
    assert fhir.post("/fhir/Patient/$validate", parameters(None, "create")).status_code == 400
    assert fhir.get("/fhir/Patient/$validate").status_code == 405
    assert fhir.post("/fhir/Nonsense/$validate", patient()).status_code == 404


def test_a_resource_of_another_type_is_an_issue(fhir):
    response = fhir.post("/fhir/Observation/$validate", patient())

    assert response.status_code == 200
    assert [severity for severity, _, _ in issues(response)] == ["error"]


def test_it_is_audited_as_an_operation(fhir):
    fhir.post("/fhir/Patient/$validate", patient())

    entry = AuditEntry.objects.order_by("-id").first()
    assert json.loads(entry.event)["subtype"][0]["code"] == "operation"
    assert AuditEntry.objects.count() == 1


def test_a_read_only_token_may_not_validate_a_write(client):
    reader = FhirClient(client, token("reader", scope="system/*.rs"))

    response = reader.post("/fhir/Patient/$validate", patient())

    assert response.status_code == 403
    assert AuditEntry.objects.get().outcome != "0"  # the refusal is audited too


def test_a_token_scoped_to_other_types_may_not_validate_this_one(client):
    observer = FhirClient(client, token("observer", scope="system/Observation.cruds"))

    assert observer.post("/fhir/Patient/$validate", patient()).status_code == 403
    assert observer.post("/fhir/Observation/$validate",
                         observation("Patient/x")).status_code == 200


def test_a_role_that_may_not_write_may_not_validate(client):
    researcher = FhirClient(client, token("researcher", role=Role.RESEARCHER))

    assert researcher.post("/fhir/Patient/$validate", patient()).status_code == 403


def test_without_a_token_it_is_401(client):
    response = client.post("/fhir/Patient/$validate", json.dumps(patient()), content_type="application/fhir+json")

    assert response.status_code == 401


def test_a_server_written_type_is_refused_as_its_write_would_be(fhir):
    assert fhir.post("/fhir/AuditEvent/$validate", {"resourceType": "AuditEvent"}).status_code == 405


def test_another_hospital_learns_no_more_from_validate_than_from_the_write_and_nothing_changes(fhir, client):
    created = fhir.create(patient())
    other = FhirClient(client, token("other-hospital", organization="hosp-b"))
    before = (Resource.objects.count(), AuditEntry.objects.count())
    path, change = f"/fhir/Patient/{created['id']}", {**patient(family="Changed"), "id": created["id"]}

    def outcome(response) -> tuple[int, list[tuple[str, str]]]:
        return response.status_code, [(i["severity"], i["code"]) for i in response.json()["issue"]]

    # a delete of A's record answers as one of an id that does not exist
    assert outcome(other.post(f"{path}/$validate?mode=delete", "")) == \
        outcome(other.post("/fhir/Patient/no-such-patient/$validate?mode=delete", "")) == \
        (404, [("error", "not-found")])
    # an update answers as the update itself would (ids are the node's: a taken one is refused)
    validated = outcome(other.post(f"{path}/$validate?mode=update", change))
    assert validated[0] == 403 and validated == outcome(other.put(path, change))

    assert Resource.objects.count() == before[0]
    assert fhir.get(path).json()["name"] == created["name"]
    # each refusal audited, naming what was asked for: A's record, the unknown id, A's record twice
    refusals = list(AuditEntry.objects.order_by("id")[before[1]:before[1] + 4])
    named = [created["id"], "no-such-patient", created["id"], created["id"]]
    assert [(e.outcome != "0", f'"Patient/{n}"' in e.event) for e, n in zip(refusals, named)] == [(True, True)] * 4
