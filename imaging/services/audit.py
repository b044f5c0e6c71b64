"""Audit entries of DIMSE C-STOREs (DICOMweb requests are audited by ``imaging.api.http``)."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone

from imaging.models import Study
from ledger.balp import DEVICE_AGENT_PREFIX, audit_event_balp
from ledger.services import audit_append


def dimse_store_audit(*, calling_ae: str, study: Study | None, outcome: str,
                      description: str | None = None, peer: str | None = None) -> None:
    """One audit entry for a C-STORE, in the caller's transaction (agent = the calling AE, a device).

    The agent is ``urn:dicom:ae:<AE title>``, never the bare title: an AE titled like a user
    (``demo``) must not be recorded as that user, nor show up in that user's own entries.
    """
    now = timezone.now()
    agent = f"{DEVICE_AGENT_PREFIX}{calling_ae}"
    event = audit_event_balp(
        interaction="create", agent=agent, outcome=outcome, recorded=now, device=True,
        observer=settings.NODE_NAME, resource=f"ImagingStudy/{study.fhir_id}" if study else None,
        patient=study.patient_id if study else None, client=peer,
        outcome_description=description,
    )
    audit_append(event=event, patient_id=study.patient_id if study else None, agent=agent,
                 outcome=outcome, recorded=now)
