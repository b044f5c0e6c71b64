"""The ledger's mirror of who manages each patient follows every write that changes it.

The consent check compares a token's Consent organization with ``PatientOwner``; these are the
writes that change the answer (a transfer, a delete and an undelete, an owner claim) and the
migration that fills the mirror from the Patients already stored.
"""

from __future__ import annotations

import importlib
import json

import pytest
from django.db import connection

from ehr.models import Resource
from ehr.services import resource_delete, resource_owner_claim, resource_update
from ledger.consents.check import consent_check
from ledger.models import ConsentToken, PatientOwner
from tests.consent.test_consent_tokens import A, B, C, grant, sync, world  # noqa: F401  (world: a fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.chain]


def check_for_b(world) -> str | None:
    return consent_check(patient_id=world["patient"], grantee=f"Organization/{B}", purpose="TREAT")


def patient_text(world, **changes) -> str:
    stored = json.loads(Resource.objects.get(resource_type="Patient", logical_id=world["patient"]).text)
    return json.dumps({**{k: v for k, v in stored.items() if k != "meta"}, **changes})


def owner_of(world) -> list[str | None]:
    return list(PatientOwner.objects.filter(patient_id=world["patient"]).values_list("organization_id", flat=True))


def test_a_patient_moved_to_another_hospital_takes_its_consent_tokens_along(world):
    grant(world)
    sync()
    token = ConsentToken.objects.get()
    assert owner_of(world) == [A] and check_for_b(world) == token.token_id

    resource_update(resource_type="Patient", logical_id=world["patient"],
                    text=patient_text(world, managingOrganization={"reference": f"Organization/{C}"}))

    token.refresh_from_db()
    consent = Resource.objects.get(resource_type="Consent", logical_id=token.consent_id)
    assert owner_of(world) == [C] and (consent.organization_id, token.organization_id) == (C, C)
    assert check_for_b(world) == token.token_id and token.status == ConsentToken.ACTIVE


def test_a_deleted_patient_is_managed_by_nobody_until_it_is_written_again(world):
    grant(world)
    sync()
    token = ConsentToken.objects.get()
    text = patient_text(world)

    resource_delete(resource_type="Patient", logical_id=world["patient"])

    assert owner_of(world) == [] and check_for_b(world) is None

    resource_update(resource_type="Patient", logical_id=world["patient"], text=text)

    assert owner_of(world) == [A] and check_for_b(world) == token.token_id


def test_an_owner_claim_of_a_patient_moves_the_owner_but_not_the_consents(world):
    grant(world)
    sync()
    row = Resource.objects.get(resource_type="Patient", logical_id=world["patient"])

    resource_owner_claim(row=row, organization_id=C)

    token = ConsentToken.objects.get()
    assert owner_of(world) == [C] and token.organization_id == A
    assert check_for_b(world) is None  # A's Consent no longer belongs to the patient's hospital


def test_the_migration_fills_the_mirror_with_the_live_patients_and_their_owners(world):
    gone = world["clinician_a"].create({"resourceType": "Patient", "name": [{"family": "Gone"}]})
    resource_delete(resource_type="Patient", logical_id=gone["id"])
    mirrored = sorted(PatientOwner.objects.values_list("patient_id", "organization_id"))
    PatientOwner.objects.all().delete()

    with connection.cursor() as cursor:
        cursor.execute(importlib.import_module("ledger.migrations.0007_consent_owner").FILL)

    assert sorted(PatientOwner.objects.values_list("patient_id", "organization_id")) == mirrored
    assert mirrored == [(world["patient"], A)]
