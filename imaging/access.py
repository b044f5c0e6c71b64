"""Who may see which study: the FHIR rules (``ehr.rules``, ``access.policy``) of the study's ImagingStudy.

A study is shown to whoever may see its ImagingStudy resource, so consents, emergencies
(break the glass), SMART scopes and patient compartments apply to DICOMweb exactly as to
``/fhir/``. A study whose ImagingStudy is not written yet (a DIMSE association still open)
falls back to the same ownership columns, which ``Study`` shares with ``Resource``.
"""

from __future__ import annotations

from django.db.models import Q

from access import policy
from access.policy import AccessContext
from ehr import rules
from ehr.models import Resource

from .models import Study

RESOURCE_TYPE = "ImagingStudy"


def study_check_type(ctx: AccessContext, interaction: str) -> None:
    """Refuse callers that no study could be shown to (scopes, role); raises a 403."""
    rules.check_type(ctx, RESOURCE_TYPE, interaction)


def study_visible(ctx: AccessContext, interaction: str = "read") -> Q:
    """Studies the caller may see (a Q on ``Study``)."""
    shown = Resource.objects.filter(rules.visible(ctx, interaction), resource_type=RESOURCE_TYPE)
    return Q(fhir_id__in=shown.values("logical_id")) | (Q(fhir_stale=True) & _owned(ctx, interaction))


def study_check_row(ctx: AccessContext, study: Study, interaction: str = "read") -> None:
    """Refuse a study outside the caller's rules (403), as ``rules.check_row`` its ImagingStudy."""
    row = Resource.objects.filter(resource_type=RESOURCE_TYPE, logical_id=study.fhir_id).first()
    if row is not None:
        rules.check_row(ctx, row, write=interaction in policy.WRITES)
    elif not Study.objects.filter(_owned(ctx, interaction), pk=study.pk).exists():
        rules.check_row(ctx, Resource(resource_type=RESOURCE_TYPE, logical_id=study.fhir_id,
                                       organization_id=study.organization_id, patient_id=study.patient_id),
                         write=interaction in policy.WRITES)


def study_note_consents(ctx: AccessContext, studies: list[Study]) -> None:
    """Record the consent tokens that let a search show other hospitals' studies (audit)."""
    policy.note_consents(ctx, {study.patient_id for study in studies
                               if study.organization_id != ctx.organization_id})


def _owned(ctx: AccessContext, interaction: str) -> Q:
    """The ownership rule alone, on the columns ``Study`` shares with ``Resource``."""
    owned = policy.owned(ctx)  # an emergency opens one patient's studies, by their ImagingStudy
    if policy.patient_scoped(ctx):
        owned &= Q(patient_id=ctx.patient_id) if ctx.patient_id else policy.NOTHING
    return owned
