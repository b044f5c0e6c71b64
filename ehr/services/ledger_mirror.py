"""What the ledger mirrors of ehr, as plain values, in the write's own transaction.

The ledger knows no FHIR and reads no ehr table: the consent check needs who manages each
patient (``PatientOwner``) and the consent tokens need the patient's owner's active Consents.
Every write of ``storage`` (and an owner claim) reports here what it changed.
"""

from __future__ import annotations

from ehr import fhirjson
from ehr.consent import consent_rules
from ehr.models import Resource
from ledger.consents.rules import ConsentVersion
from ledger.services import (
    consent_patient_lock,
    consent_tokens_owner_move,
    consent_tokens_refresh,
    patient_owner_remove,
    patient_owners_set,
)
from ledger.verify import consent_format as fmt


def patients_written(rows: list[Resource]) -> None:
    """Patients created, changed or undeleted: the ledger learns their current owner."""
    patient_owners_set(owners={row.logical_id: row.organization_id for row in rows
                               if row.resource_type == "Patient" and not row.deleted})


def patient_deleted(row: Resource) -> None:
    if row.resource_type == "Patient":
        patient_owner_remove(patient_id=row.logical_id)


def patient_moved(row: Resource) -> None:
    """The patient's compartment moved to its new owner, its Consents too: their tokens follow."""
    consent_tokens_owner_move(patient_id=row.logical_id, organization_id=row.organization_id)


def consents_changed(rows: list[Resource], previous_patient: str | None = None) -> None:
    """A written Consent changes its patient's consent tokens (and a moved one its old patient's)."""
    consents = [row for row in rows if row.resource_type == "Consent"]
    if not consents:
        return
    for patient_id in sorted(p for p in {previous_patient, *(row.patient_id for row in consents)} if p):
        consent_patient_lock(patient_id=patient_id)  # before reading: a concurrent Consent is seen
        owner, active = _owner_consents(patient_id)
        consent_tokens_refresh(patient_id=patient_id, owner=owner, consents=active)


def _owner_consents(patient_id: str) -> tuple[str | None, list[ConsentVersion]]:
    """The patient's owner and that owner's Consents of the patient (ledger.consents.check says why)."""
    owner = (Resource.objects.filter(resource_type="Patient", logical_id=patient_id, deleted=False)
             .values_list("organization_id", flat=True).first())
    stored = (Resource.objects.filter(resource_type="Consent", patient_id=patient_id, deleted=False,
                                      organization_id=owner)
              .values_list("logical_id", "version_id", "text", "organization_id"))
    return owner, [ConsentVersion(consent_id, version, fmt.consent_hash(text), organization_id,
                                  tuple(consent_rules(fhirjson.loads(text))))
                   for consent_id, version, text, organization_id in stored]


def owner_claimed(row: Resource, organization_id: str) -> None:
    """An owner claim moves only the row: a Patient's new owner, or a Consent's tokens rechecked."""
    if row.resource_type == "Patient" and not row.deleted:
        patient_owners_set(owners={row.logical_id: organization_id})
    elif row.resource_type == "Consent":
        consents_changed([row])
