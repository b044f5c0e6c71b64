"""The ledger's mirror of who manages each patient, kept by ``ehr`` in the write's transaction."""

from __future__ import annotations

from ledger.models import PatientOwner


def patient_owners_set(*, owners: dict[str, str | None]) -> None:
    """Patient id → managing organization, for Patients created, changed or claimed (one statement)."""
    if owners:
        PatientOwner.objects.bulk_create(
            [PatientOwner(patient_id=patient_id, organization_id=organization_id)
             for patient_id, organization_id in sorted(owners.items())],
            update_conflicts=True, unique_fields=["patient_id"], update_fields=["organization_id"])


def patient_owner_remove(*, patient_id: str) -> None:
    """A deleted Patient is managed by nobody: none of its tokens counts."""
    PatientOwner.objects.filter(patient_id=patient_id).delete()
