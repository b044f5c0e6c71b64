"""Two hospitals on one node, as the red team had them: accounts of every role in each.

Attacks are replayed with these through the real doors (Django's test client or a live
server, real PostgreSQL, Redis and anvil); each test asserts the refusal, that nothing
was written, and what the audit recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from access.models import Role
from ehr.models import Resource
from ledger.models import AuditEntry
from tests.ehr.conftest import FhirClient, patient
from tests.imaging.conftest import role_token

HOSPITAL_A = "hospital-a"
HOSPITAL_B = "hospital-b"


@dataclass
class Hospital:
    """One organization's accounts: FHIR clients by role (bearer tokens)."""

    organization_id: str
    clinician: FhirClient
    integration: FhirClient
    dpo: FhirClient
    clinician_token: str
    integration_token: str


def hospital(client, organization_id: str) -> Hospital:
    short = organization_id.rsplit("-", 1)[-1]
    clinician_token = role_token(f"clin-{short}", Role.CLINICIAN, organization=organization_id)
    integration_token = role_token(f"int-{short}", Role.INTEGRATION, organization=organization_id)
    dpo_token = role_token(f"dpo-{short}", Role.DPO, organization=organization_id)
    return Hospital(organization_id, FhirClient(client, clinician_token), FhirClient(client, integration_token),
                    FhirClient(client, dpo_token), clinician_token, integration_token)


@pytest.fixture
def hospital_a(client, db) -> Hospital:
    return hospital(client, HOSPITAL_A)


@pytest.fixture
def hospital_b(client, db) -> Hospital:
    return hospital(client, HOSPITAL_B)


@pytest.fixture
def patient_of_a(hospital_a) -> dict:
    """A patient registered by hospital A, with one Observation."""
    created = hospital_a.clinician.create(patient(family="Alpha", given="Ann", birth="1961-02-03"))
    hospital_a.clinician.create({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{created['id']}"}, "valueQuantity": {"value": 61}})
    return created


def resource_count() -> int:
    return Resource.objects.count()


def audit_entries_since(pk: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(pk__gt=pk).order_by("pk"))


def last_audit_pk() -> int:
    entry = AuditEntry.objects.order_by("-pk").first()
    return entry.pk if entry else 0
