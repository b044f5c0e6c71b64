"""Who may do what to which FHIR resource: ``access.policy``'s role rules for FHIR's resources.

What only FHIR knows lives here: server-written types, the compartment a resource (or one
version of it) belongs to, ids that are claimed (an organization's own Organization, an
account's Practitioner or Patient), and which Consent a write may record. Every refusal is a
``FhirError`` (a ``Refusal``), so a Bundle entry reports it as its own.

Single resources are checked with ``check_type`` then ``check_row``; searches, history
and ``$everything`` filter with the ``visible`` Q so that a hidden resource is never
returned nor counted.
"""

from __future__ import annotations

from dataclasses import replace

from django.db.models import Q

from access import policy
from access.errors import Refusal
from access.models import AccessProfile, Role
from access.policy import CHART_ROLES, NOTHING, TREATMENT, WRITES, AccessContext
from ehr import fhirjson
from ehr.consent import PERMIT, consent_rules
from ehr.fhir import (
    SERVER_WRITTEN_TYPES,
    FhirError,
    patient_not_writable,
    refuse_server_written,
    server_owned,
)
from ehr.models import Resource, ResourceVersion
from ehr.references import references_require
from ledger.consents.check import consented_patients

# --- checks ---------------------------------------------------------------------------------

def check_type(ctx: AccessContext, resource_type: str, interaction: str) -> None:
    """Refuse what no resource of this type could allow: the scope letter, the role."""
    if interaction in WRITES:
        refuse_server_written(resource_type)
    if not policy.scope_allows(ctx, resource_type, interaction):
        raise FhirError(403, "forbidden",
                        f"The token's scopes do not allow {interaction} on {resource_type}")
    check_role(ctx, interaction, resource_type)


def check_role(ctx: AccessContext, interaction: str, resource_type: str = "") -> None:
    """``access.policy.check_role``, refusing as FHIR does (a Bundle entry catches ``FhirError``)."""
    try:
        policy.check_role(ctx, interaction, resource_type)
    except Refusal as refusal:
        raise FhirError.of(refusal) from None


def check_row(ctx: AccessContext, row: Resource | ResourceVersion, *, write: bool = False) -> None:
    """Refuse a resource (or one version of it, by that version's compartment) outside the caller's rules.

    Breaking the glass opens reading only: an emergency never lets a caller write, and so
    never lets it move a patient (and the patient's records) to its own hospital.
    """
    resource = row  # a version carries its own compartment and owner
    in_patient_context = not policy.patient_scoped(ctx) or (bool(ctx.patient_id) and resource.patient_id == ctx.patient_id)
    if in_patient_context and (_emergency_read(ctx, resource, write) or policy.owns(ctx, resource)):
        return
    if in_patient_context and not write and policy.consented(ctx, resource.patient_id):
        return
    if _dpo_oversees(ctx, resource):
        return
    raise FhirError(403, "forbidden", f"{row.resource_type}/{row.logical_id} is outside this account's access")


def _dpo_oversees(ctx: AccessContext, resource: Resource | ResourceVersion) -> bool:
    """A hospital's DPO oversees its own hospital's Consents; a DPO of no organization (the
    node's own) every Consent on the node. Another hospital's DPO sees and changes nothing."""
    return (ctx.role == Role.DPO and resource.resource_type == "Consent"
            and (ctx.organization_id is None or resource.organization_id == ctx.organization_id))


def check_written(ctx: AccessContext, row: Resource) -> None:
    """``check_row`` for a write, on the version just written (it is rolled back if refused).

    Its local references must name what the caller may read (``ehr.references``: 422 for a
    missing and a hidden target alike; a transaction checks them at its end).

    A Consent that grants anything opens the patient's chart to someone else, so only the
    patient grants, or a clinician or system of the patient's hospital recording the
    patient's own signed consent: ``performer`` names the patient (or a RelatedPerson acting
    for them) and ``sourceAttachment``/``sourceReference`` carries the signed form. The DPO
    oversees consents (reads them, records denials and withdrawals) but never grants one.
    """
    try:
        check_row(ctx, row, write=True)
    except FhirError:
        if row.patient_id is None or row.resource_type == "Patient":
            raise
        # Another hospital's patient answers exactly as a patient that does not exist.
        raise patient_not_writable(row.resource_type, row.patient_id) from None
    if not row.deleted:
        # What the caller may read, whatever its scopes: a write-only token still names its records.
        references_require([row], visible(replace(ctx, scopes=None), "read"), writer=ctx)
    _check_claim(ctx, row.resource_type, row.logical_id)
    if row.resource_type != "Consent" or row.deleted or ctx.role == Role.PATIENT:
        return
    consent = fhirjson.loads(row.text)
    if not any(rule.kind == PERMIT for rule in consent_rules(consent)):
        return
    if ctx.role == Role.DPO:
        raise FhirError(403, "forbidden", "The data protection officer may not grant consent on a patient's behalf")
    if not _signed_by_patient(consent, row.patient_id):
        raise FhirError(422, "processing", "A Consent that grants access, recorded by staff, needs performer naming "
                                           "the patient (or a RelatedPerson) and the signed form (sourceAttachment "
                                           "or sourceReference)")


def _check_claim(ctx: AccessContext, resource_type: str, logical_id: str | None) -> None:
    """Ids that are not first come, first served: the server's own, and each organization's
    Organization resource (its id is the organization's), which only that organization writes."""
    if server_owned(resource_type, logical_id):
        raise FhirError(403, "forbidden", f"{resource_type}/{logical_id} is maintained by the server")
    if (resource_type == "Organization" and logical_id != ctx.organization_id
            and AccessProfile.objects.filter(organization_id=logical_id).exists()):
        raise FhirError(403, "forbidden", f"Organization/{logical_id} is written by that organization only")
    link = {"Practitioner": "practitioner_id", "Patient": "patient_id"}.get(resource_type)
    if link and (AccessProfile.objects.filter(**{link: logical_id}, organization_id__isnull=False)
                 .exclude(organization_id=ctx.organization_id).exists()):
        # An account's own Practitioner or Patient (its fhirUser) belongs to the account's hospital.
        raise FhirError(403, "forbidden", f"{resource_type}/{logical_id} is an account's own, of another organization")


def _signed_by_patient(consent: dict, patient_id: str | None) -> bool:
    performers = [p.get("reference", "") for p in consent.get("performer") or [] if isinstance(p, dict)]
    by_patient = any(ref == f"Patient/{patient_id}" or ref.startswith("RelatedPerson/") for ref in performers)
    return by_patient and bool(consent.get("sourceAttachment") or consent.get("sourceReference"))


def _emergency_read(ctx: AccessContext, resource: Resource | ResourceVersion, write: bool) -> bool:
    """Breaking the glass reads one patient's record: a resource in a patient's compartment."""
    return ctx.break_glass and not write and resource.patient_id is not None


def check_existing(ctx: AccessContext, resource_type: str, logical_id: str,
                   interaction: str = "read") -> Resource | None:
    """``check_row`` on the stored resource if there is one (deleted ones included); returns it.

    A read, patch or delete of what the caller may not see answers exactly as for what does
    not exist (404), so ids of other hospitals' records cannot be probed. An update keeps its
    403: a client-chosen id that is taken cannot be created (PUT) anyway.
    """
    row = Resource.objects.filter(resource_type=resource_type, logical_id=logical_id).first()
    if row is not None:
        try:
            check_row(ctx, row, write=interaction in WRITES)
        except FhirError:
            if interaction == "update":
                raise
            raise FhirError(404, "not-found", f"{resource_type}/{logical_id} is not known") from None
    return row


def authorize(ctx: AccessContext, interaction: str, resource_type: str,
              logical_id: str | None = None) -> Resource | None:
    """Type-level check, then the stored resource's (for an instance interaction); returns it."""
    check_type(ctx, resource_type, interaction)
    if logical_id is not None and interaction == "delete":  # writes are checked on the row written
        _check_claim(ctx, resource_type, logical_id)
    if logical_id is not None:
        return check_existing(ctx, resource_type, logical_id, interaction)
    return None


# --- filters --------------------------------------------------------------------------------

def visible(ctx: AccessContext, interaction: str = "read", *, emergency_patient: str | None = None) -> Q:
    """Resources the caller may see in a search, history or ``$everything`` (Q on Resource).

    Breaking the glass adds one patient's record, ``emergency_patient`` (the patient the
    request names), never more: an emergency search or history without one sees only what
    the rules allow anyway. For a write (conditional matching) the emergency never applies.
    """
    rules = policy.owned(ctx)
    if interaction not in WRITES and ctx.role in CHART_ROLES and ctx.organization_id:
        rules |= Q(patient_id__in=consented_patients(grantee=policy.grantee(ctx), purpose=TREATMENT))
    if ctx.role == Role.DPO:
        consents = Q(resource_type="Consent")
        rules |= consents if ctx.organization_id is None else consents & Q(organization_id=ctx.organization_id)
    if ctx.break_glass and interaction not in WRITES and emergency_patient:
        rules |= Q(patient_id=emergency_patient)
    # AuditEvents are served from the audit log (``ehr.api.auditevents``), never from stored
    # resources: a row of that type could only be a client's fake from before writes were refused.
    rules &= ~Q(resource_type__in=SERVER_WRITTEN_TYPES)
    if policy.patient_scoped(ctx):
        rules &= Q(patient_id=ctx.patient_id) if ctx.patient_id else NOTHING
    if ctx.scopes is None:
        return rules
    from ehr.searchparams import resource_types

    types = resource_types()
    allowed = [t for t in types if policy.scope_allows(ctx, t, interaction)]
    return rules if len(allowed) == len(types) else rules & Q(resource_type__in=allowed)


# --- the audit log -------------------------------------------------------------------------

AUDIT_LOG_REFUSED = "Only the patient concerned and the data protection officer read the audit log"


def audit_entries_readable(ctx: AccessContext) -> Q | None:
    """The audit entries the caller may read; None: none at all (docs/access-control.md).

    The one rule for every door to the log (``/fhir/AuditEvent`` and the ledger's proofs):
    a hospital's DPO reads the entries about its hospital's patients and those of its
    hospital's accounts (a DPO of no organization, the node's own, every entry), a patient the
    entries about themself, nobody else any.
    """
    if ctx.role == Role.DPO and ctx.organization_id is None:
        return Q()
    if ctx.role == Role.DPO:
        patients = Resource.objects.filter(resource_type="Patient", organization_id=ctx.organization_id)
        accounts = AccessProfile.objects.filter(organization_id=ctx.organization_id)
        return (Q(patient_id__in=patients.values("logical_id"))
                | Q(patient_id__isnull=True, agent__in=accounts.values("user__username")))
    if ctx.role == Role.PATIENT and ctx.patient_id:
        return Q(patient_id=ctx.patient_id)
    return None
