"""The one audited endpoint (``access.endpoint``), door by door: /fhir, /dicomweb, /api/ledger.

Each door gets the same probe handler: it writes a row (an auth ``Group``), then answers,
refuses in that door's own error type, fails with a bug, or meets a chain outage. Whatever
it does, exactly one audit entry is written, and a handler that did not succeed keeps none
of its writes; an audit entry that cannot be written takes the handler's writes with it.
Real PostgreSQL, real tokens, the real doors; the probe views are mounted by this module.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import path
from rest_framework.response import Response

from access.errors import Refusal
from access.models import Role
from ehr.api.http import fhir_endpoint, fhir_response
from ehr.fhir import FhirError
from imaging.api.http import DicomwebError, dicomweb_endpoint
from ledger.api.views import LedgerAPIView
from ledger.chain.errors import LedgerUnavailable
from ledger.models import AuditEntry
from tests.imaging.conftest import role_token

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

OUTCOMES = ("allowed", "refused", "failed", "unavailable")


def _probe(door: str, outcome: str, refusal: Exception):
    """Write first, then do what the test asked for."""
    Group.objects.create(name=f"{door}-{outcome}")
    if outcome == "refused":
        raise refusal
    if outcome == "failed":
        raise RuntimeError("a bug in the handler")
    if outcome == "unavailable":
        raise LedgerUnavailable("the chain node does not answer")


@fhir_endpoint("instance")
def fhir_probe(request, resource_type: str, logical_id: str) -> HttpResponse:
    _probe("fhir", logical_id, FhirError(403, "forbidden", "not for you"))
    return fhir_response({"resourceType": resource_type, "id": logical_id})


@dicomweb_endpoint(get="read")
def dicomweb_probe(request, outcome: str) -> HttpResponse:
    _probe("dicomweb", outcome, DicomwebError(403, "not for you"))
    return JsonResponse({"outcome": outcome})


class LedgerProbe(LedgerAPIView):
    def get(self, request, outcome: str) -> Response:
        _probe("api", outcome, Refusal(403, "forbidden", "not for you"))
        return Response({"outcome": outcome})


urlpatterns = [
    path("fhir/Basic/<str:logical_id>", fhir_probe, {"resource_type": "Basic"}),
    path("dicomweb/probe/<str:outcome>", dicomweb_probe),
    path("api/ledger/probe/<str:outcome>", LedgerProbe.as_view()),
]
DOORS = {
    "fhir": "/fhir/Basic/{}",
    "dicomweb": "/dicomweb/probe/{}",
    "api": "/api/ledger/probe/{}",
}


@pytest.fixture
def token(db) -> str:
    return role_token("endpoint-probe", Role.INTEGRATION, organization="hosp-a")


def call(client, token: str, door: str, outcome: str):
    before = AuditEntry.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    response = client.get(DOORS[door].format(outcome), HTTP_AUTHORIZATION=f"Bearer {token}")
    return response, list(AuditEntry.objects.filter(pk__gt=before).order_by("pk"))


def error_message(door: str, response) -> str:
    """The message of an error answer, in the door's own format."""
    body = response.json()
    if door == "fhir":
        assert body["resourceType"] == "OperationOutcome"
        return body["issue"][0]["diagnostics"]
    if door == "dicomweb":
        assert body["status"] == response.status_code
        return body["errorMessage"]
    return body["error"]["message"]


@pytest.mark.parametrize("door", DOORS)
def test_an_allowed_request_keeps_its_write_and_one_audit_entry(client, token, door):
    response, entries = call(client, token, door, "allowed")

    assert response.status_code == 200
    assert [(e.outcome, e.agent) for e in entries] == [("0", "endpoint-probe")]
    assert Group.objects.filter(name=f"{door}-allowed").exists()


@pytest.mark.parametrize("door", DOORS)
def test_a_refused_request_keeps_no_write_and_one_audit_entry(client, token, door):
    response, entries = call(client, token, door, "refused")

    assert response.status_code == 403
    assert error_message(door, response) == "not for you"
    assert [e.outcome for e in entries] == ["4"]
    assert "HTTP 403" in entries[0].event
    assert not Group.objects.filter(name=f"{door}-refused").exists()


@pytest.mark.parametrize("door", DOORS)
def test_a_failed_request_keeps_no_write_and_one_audit_entry(client, token, door):
    response, entries = call(client, token, door, "failed")

    assert response.status_code == 500
    assert "a bug" not in response.content.decode() and "Traceback" not in response.content.decode()
    assert [e.outcome for e in entries] == ["8"]
    assert not Group.objects.filter(name=f"{door}-failed").exists()


@pytest.mark.parametrize("door", DOORS)
def test_an_outage_answers_503_with_retry_after_and_is_audited_once(client, token, door, settings):
    response, entries = call(client, token, door, "unavailable")

    assert response.status_code == 503
    assert response["Retry-After"] == str(settings.TRANSIENT_RETRY_AFTER_SECONDS)
    assert "chain" in error_message(door, response).lower()
    assert [e.outcome for e in entries] == ["8"]
    assert not Group.objects.filter(name=f"{door}-unavailable").exists()


@pytest.mark.parametrize("door", DOORS)
def test_an_unauthenticated_request_is_refused_and_audited_once(client, door):
    before = AuditEntry.objects.count()

    response = client.get(DOORS[door].format("allowed"))

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert AuditEntry.objects.count() == before + 1
    assert AuditEntry.objects.order_by("-pk").first().agent == "(anonymous)"
    assert not Group.objects.exists()


@pytest.mark.parametrize("door", DOORS)
def test_an_access_that_cannot_be_audited_keeps_no_write(client, token, door):
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'audit store unavailable'; END $$;
            CREATE TRIGGER refuse_audit BEFORE INSERT ON ledger_auditentry
            FOR EACH ROW EXECUTE FUNCTION refuse_audit();
        """)

    response, entries = call(client, token, door, "allowed")

    assert response.status_code == 500
    assert "could not be audited" in error_message(door, response).lower()
    assert entries == []
    assert not Group.objects.exists()


def test_every_door_reads_the_same_record_of_the_caller(client, token):
    """The audit entries of the three doors name the same agent and the interaction asked for."""
    events = [json.loads(call(client, token, door, "allowed")[1][0].event) for door in DOORS]

    assert {event["agent"][0]["who"]["identifier"]["value"] for event in events} == {"endpoint-probe"}
    assert [event["subtype"][0]["code"] for event in events] == ["read", "read", "read"]
