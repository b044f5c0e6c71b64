"""Who may do what to which FHIR resource: role rules ANDed with SMART scopes.

Rules (docs/access-control.md): a clinician or an integration reads and writes the
records of the patients under care in its organization and the organization's records
that belong to no patient; a patient reads their own compartment; researchers, data
protection officers and administrators have no chart access (the DPO reads the audit
log). Every interaction also needs the SMART scope letter of its action. A clinician
may override the role rules for reading by declaring an emergency
(``Carrack-Break-Glass: reason``); the access is then allowed and its audit entry flagged.

Single resources are checked with ``check_type`` then ``check_row``; searches, history
and ``$everything`` filter with the ``visible`` Q so that a hidden resource is never
returned nor counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.http import HttpRequest

from ehr import fhirjson
from ehr.access.scopes import ScopeSet
from ehr.consent import PERMIT, consent_rules
from ehr.fhir import SERVER_WRITTEN_TYPES, FhirError, patient_not_writable, refuse_server_written, server_owned
from ehr.models import AccessProfile, Resource, ResourceVersion, Role
from ledger.consents.check import consent_check, consent_tokens_for, consented_patients

BREAK_GLASS_HEADER = "Carrack-Break-Glass"
# FHIR interaction → SMART v2 scope letter.
ACTIONS = {
    "read": "r", "vread": "r", "history": "r", "everything": "r",
    "search": "s",
    "create": "c",
    "update": "u", "patch": "u",
    "delete": "d",
}
WRITES = ("create", "update", "patch", "delete")
CHART_ROLES = (Role.CLINICIAN, Role.INTEGRATION)
NOTHING = Q(pk__in=[])
# Reading another hospital's patient needs that patient's consent for this purpose of use.
TREATMENT = "TREAT"


@dataclass(frozen=True)
class AccessContext:
    """The caller as the rules see it; built once per request."""

    user: Any
    role: str | None
    organization_id: str | None = None
    practitioner_id: str | None = None
    patient_id: str | None = None
    scopes: ScopeSet | None = None
    break_glass_reason: str | None = None
    # Consent tokens that allowed this request's reads (recorded in its audit entry).
    consent_tokens: list[str] = field(default_factory=list, compare=False)

    @property
    def break_glass(self) -> bool:
        return self.break_glass_reason is not None

    @classmethod
    def from_request(cls, request: HttpRequest) -> AccessContext:
        """Role and links from the user's AccessProfile; scopes from the OAuth2 token.

        A staff user without a profile is an administrator; any other user without one
        has no role and no access.
        """
        user = request.user
        profile = _profile(user)
        role = profile.role if profile else (Role.ADMIN if user.is_authenticated and user.is_staff else None)
        context = cls(
            user=user, role=role,
            organization_id=profile.organization_id if profile else None,
            practitioner_id=profile.practitioner_id if profile else None,
            patient_id=profile.patient_id if profile else None,
            scopes=getattr(request, "smart_scopes", None),
            break_glass_reason=_break_glass_reason(request, role),
        )
        return context


def _profile(user) -> AccessProfile | None:
    """The user's profile, usually already loaded with the OAuth2 token."""
    if not user.is_authenticated:
        return None
    try:
        return user.access_profile
    except AccessProfile.DoesNotExist:
        return None


def _break_glass_reason(request: HttpRequest, role: str | None) -> str | None:
    raw = request.headers.get(BREAK_GLASS_HEADER)
    if raw is None:
        return None
    if role != Role.CLINICIAN:
        raise FhirError(403, "forbidden", "Only clinicians may break the glass")
    reason = raw.strip()
    if not reason:
        raise FhirError(400, "required", f"{BREAK_GLASS_HEADER} needs a reason")
    return reason[:500]


# --- checks ---------------------------------------------------------------------------------

def scope_allows(ctx: AccessContext, resource_type: str, interaction: str) -> bool:
    return ctx.scopes is None or ctx.scopes.allows(resource_type, ACTIONS[interaction])


def check_type(ctx: AccessContext, resource_type: str, interaction: str) -> None:
    """Refuse what no resource of this type could allow: the scope letter, the role."""
    if interaction in WRITES:
        refuse_server_written(resource_type)
    if not scope_allows(ctx, resource_type, interaction):
        raise FhirError(403, "forbidden",
                        f"The token's scopes do not allow {interaction} on {resource_type}")
    check_role(ctx, interaction, resource_type)


def check_role(ctx: AccessContext, interaction: str, resource_type: str = "") -> None:
    """Refuse roles that may never do this (system-level searches and history use it alone).

    Consents are the exception to read-only roles: patients write their own, and the data
    protection officer oversees those of its hospital (``_dpo_oversees``).
    """
    if ctx.role == Role.PATIENT and ctx.patient_id and (interaction not in WRITES or resource_type == "Consent"):
        return
    if ctx.role == Role.DPO and resource_type == "Consent":
        return
    if ctx.role in CHART_ROLES and ctx.organization_id:
        return
    if ctx.role == Role.CLINICIAN and ctx.break_glass:
        return
    raise FhirError(403, "forbidden", f"This account may not {interaction} {resource_type or 'any'} resources")


def check_row(ctx: AccessContext, row: Resource | ResourceVersion, *, write: bool = False) -> None:
    """Refuse a resource (or one version of it, by that version's compartment) outside the caller's rules.

    Breaking the glass opens reading only: an emergency never lets a caller write, and so
    never lets it move a patient (and the patient's records) to its own hospital.
    """
    resource = row  # a version carries its own compartment and owner
    in_patient_context = not patient_scoped(ctx) or (bool(ctx.patient_id) and resource.patient_id == ctx.patient_id)
    if in_patient_context and (_emergency_read(ctx, resource, write) or owns(ctx, resource)):
        return
    if in_patient_context and not write and _consented(ctx, resource.patient_id):
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


def _consented(ctx: AccessContext, patient_id: str | None) -> bool:
    """A chart role of another hospital reads a patient who consented to it for treatment."""
    if not (patient_id and ctx.role in CHART_ROLES and ctx.organization_id):
        return False
    token = consent_check(patient_id=patient_id, grantee=_grantee(ctx), purpose=TREATMENT)
    if token is not None:
        ctx.consent_tokens.append(token)
    return token is not None


def note_consents(ctx: AccessContext, patient_ids: set[str | None]) -> None:
    """Record the tokens that let a search or ``$everything`` show these patients' records."""
    wanted = {p for p in patient_ids if p}
    if wanted and ctx.role in CHART_ROLES and ctx.organization_id and not ctx.break_glass:
        ctx.consent_tokens.extend(consent_tokens_for(patient_ids=wanted, grantee=_grantee(ctx),
                                                     purpose=TREATMENT))


def _grantee(ctx: AccessContext) -> str:
    return f"Organization/{ctx.organization_id}"


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

def patient_scoped(ctx: AccessContext) -> bool:
    """SMART ``patient/`` scopes only: the token is limited to one patient's compartment.

    That patient is the caller's own (a patient's profile); a token with only ``patient/``
    scopes and no patient in context sees nothing.
    """
    scopes = ctx.scopes.scopes if ctx.scopes is not None else ()
    return bool(scopes) and all(scope.context == "patient" for scope in scopes)


def _ownership(ctx: AccessContext) -> tuple[str, str] | None:
    """The one Resource column and value that make a row the caller's, by role.

    Clinicians and integrations own their organization's records (decided at write time,
    ``ehr.services.storage``: one indexed equality); a patient owns their compartment.
    """
    if ctx.role in CHART_ROLES and ctx.organization_id:
        return "organization_id", ctx.organization_id
    if ctx.role == Role.PATIENT and ctx.patient_id:
        return "patient_id", ctx.patient_id
    return None


def owns(ctx: AccessContext, row: Resource) -> bool:
    """``owned`` evaluated on one row already in hand (no query)."""
    ownership = _ownership(ctx)
    return ownership is not None and getattr(row, ownership[0]) == ownership[1]


def owned(ctx: AccessContext) -> Q:
    """Resources the role rules allow, scopes aside (deleted ones included)."""
    ownership = _ownership(ctx)
    return Q(**{ownership[0]: ownership[1]}) if ownership else NOTHING


def visible(ctx: AccessContext, interaction: str = "read", *, emergency_patient: str | None = None) -> Q:
    """Resources the caller may see in a search, history or ``$everything`` (Q on Resource).

    Breaking the glass adds one patient's record, ``emergency_patient`` (the patient the
    request names), never more: an emergency search or history without one sees only what
    the rules allow anyway. For a write (conditional matching) the emergency never applies.
    """
    rules = owned(ctx)
    if interaction not in WRITES and ctx.role in CHART_ROLES and ctx.organization_id:
        rules |= Q(patient_id__in=consented_patients(grantee=_grantee(ctx), purpose=TREATMENT))
    if ctx.role == Role.DPO:
        consents = Q(resource_type="Consent")
        rules |= consents if ctx.organization_id is None else consents & Q(organization_id=ctx.organization_id)
    if ctx.break_glass and interaction not in WRITES and emergency_patient:
        rules |= Q(patient_id=emergency_patient)
    # AuditEvents are served from the audit log (``ehr.api.auditevents``), never from stored
    # resources: a row of that type could only be a client's fake from before writes were refused.
    rules &= ~Q(resource_type__in=SERVER_WRITTEN_TYPES)
    if patient_scoped(ctx):
        rules &= Q(patient_id=ctx.patient_id) if ctx.patient_id else NOTHING
    if ctx.scopes is None:
        return rules
    from ehr.searchparams import resource_types

    types = resource_types()
    allowed = [t for t in types if scope_allows(ctx, t, interaction)]
    return rules if len(allowed) == len(types) else rules & Q(resource_type__in=allowed)
