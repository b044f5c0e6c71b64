"""FHIR API fixtures: an authenticated client speaking application/fhir+json."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from oauth2_provider.models import Application

from access.models import AccessProfile, Role
from access.services import client_ensure, token_ensure

FHIR_JSON = "application/fhir+json"


class FhirClient:
    """Django's test client with a bearer token and FHIR media types by default."""

    def __init__(self, client, token: str) -> None:
        self.client = client
        self.auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    def get(self, path: str, **headers):
        return self.client.get(path, **self.auth, **headers)

    def post(self, path: str, body, content_type: str = FHIR_JSON, **headers):
        return self.client.post(path, _text(body), content_type=content_type, **self.auth, **headers)

    def put(self, path: str, body, content_type: str = FHIR_JSON, **headers):
        return self.client.put(path, _text(body), content_type=content_type, **self.auth, **headers)

    def patch(self, path: str, body, content_type: str = "application/json-patch+json", **headers):
        return self.client.patch(path, _text(body), content_type=content_type, **self.auth, **headers)

    def delete(self, path: str, **headers):
        return self.client.delete(path, **self.auth, **headers)

    def create(self, resource: dict) -> dict:
        response = self.post(f"/fhir/{resource['resourceType']}", resource)
        assert response.status_code == 201, response.content
        return response.json()


def _text(body) -> str:
    return body if isinstance(body, str) else json.dumps(body)


def integration_token(username: str, organization_id: str = "test-hospital") -> str:
    """A client-credentials style OAuth2 token (``system/*.cruds``) of an integration user."""
    user = get_user_model().objects.create_user(username, password=None)
    AccessProfile.objects.create(user=user, role=Role.INTEGRATION, organization_id=organization_id)
    client = client_ensure(name=f"{username}-client", owner=user,
                           client_type=Application.CLIENT_CONFIDENTIAL,
                           grant_type=Application.GRANT_CLIENT_CREDENTIALS, scopes="system/*.cruds")
    return token_ensure(user=None, application=client, scope="system/*.cruds").token


@pytest.fixture
def api_token(db) -> str:
    return integration_token("integration")


@pytest.fixture
def fhir(client, api_token) -> FhirClient:
    return FhirClient(client, api_token)


def patient(family: str = "Doe", given: str = "Jane", birth: str = "1970-03-04", **extra) -> dict:
    return {"resourceType": "Patient", "name": [{"family": family, "given": [given]}],
            "birthDate": birth, **extra}


def observation(patient_ref: str, code: str = "8867-4", value: str | float = 72, **extra) -> dict:
    return {
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": patient_ref},
        "effectiveDateTime": "2024-05-01T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
        **extra,
    }
