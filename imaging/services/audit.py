"""Audit entries of DIMSE C-STOREs (DICOMweb requests are audited by ``imaging.api.http``)."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from imaging.models import Study
from ledger.audit import audit_append, audit_event_balp


def dimse_store_audit(*, calling_ae: str, study: Study | None, outcome: str,
                      description: str | None = None, peer: str | None = None) -> None:
    """One audit entry for a C-STORE, in the caller's transaction (agent = calling AE title)."""
    now = timezone.now()
    event = audit_event_balp(
        interaction="create", agent=calling_ae, outcome=outcome, recorded=now,
        observer=settings.NODE_NAME, resource=f"ImagingStudy/{study.fhir_id}" if study else None,
        patient=study.patient_id if study else None, client=peer,
        outcome_description=description,
    )
    audit_append(event=event, patient_id=study.patient_id if study else None, agent=calling_ae,
                 outcome=outcome, recorded=now)
