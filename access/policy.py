"""Who may do what, by role and SMART scope, whatever the door: the rules that know no FHIR.

Rules (docs/access-control.md): a clinician or an integration works on the records of its
organization and on those of patients who consented to it for treatment; a patient on their
own compartment; researchers, data protection officers and administrators have no chart
access (the DPO reads the audit log and oversees consents). Every interaction also needs
the SMART scope letter of its action. A clinician may declare an emergency
(``Carrack-Break-Glass: reason``); the access is then allowed and its audit entry flagged.

What a rule says about FHIR resources (server-written types, compartments, claims on ids,
the Consent a write grants) lives with them in ``ehr.rules``; imaging applies both to its
studies (``imaging.access``). The rows these rules look at carry ``organization_id`` and
``patient_id`` columns (``ehr.Resource``, ``imaging.Study``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q
from django.http import HttpRequest

from ledger.consents.check import consent_check, consent_tokens_for

from .errors import Refusal
from .models import AccessProfile, Role
from .scopes import ScopeSet

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
        raise Refusal(403, "forbidden", "Only clinicians may break the glass")
    reason = raw.strip()
    if not reason:
        raise Refusal(400, "required", f"{BREAK_GLASS_HEADER} needs a reason")
    return reason[:500]


# --- checks ---------------------------------------------------------------------------------

def scope_allows(ctx: AccessContext, resource_type: str, interaction: str) -> bool:
    return ctx.scopes is None or ctx.scopes.allows(resource_type, ACTIONS[interaction])


def check_role(ctx: AccessContext, interaction: str, resource_type: str = "") -> None:
    """Refuse roles that may never do this (system-level searches and history use it alone).

    Consents are the exception to read-only roles: patients write their own, and the data
    protection officer oversees those of its hospital (``ehr.rules``).
    """
    if ctx.role == Role.PATIENT and ctx.patient_id and (interaction not in WRITES or resource_type == "Consent"):
        return
    if ctx.role == Role.DPO and resource_type == "Consent":
        return
    if ctx.role in CHART_ROLES and ctx.organization_id:
        return
    if ctx.role == Role.CLINICIAN and ctx.break_glass:
        return
    raise Refusal(403, "forbidden", f"This account may not {interaction} {resource_type or 'any'} resources")


def consented(ctx: AccessContext, patient_id: str | None) -> bool:
    """A chart role of another hospital reads a patient who consented to it for treatment."""
    if not (patient_id and ctx.role in CHART_ROLES and ctx.organization_id):
        return False
    token = consent_check(patient_id=patient_id, grantee=grantee(ctx), purpose=TREATMENT)
    if token is not None:
        ctx.consent_tokens.append(token)
    return token is not None


def note_consents(ctx: AccessContext, patient_ids: set[str | None]) -> None:
    """Record the tokens that let a search or ``$everything`` show these patients' records."""
    wanted = {p for p in patient_ids if p}
    if wanted and ctx.role in CHART_ROLES and ctx.organization_id and not ctx.break_glass:
        ctx.consent_tokens.extend(consent_tokens_for(patient_ids=wanted, grantee=grantee(ctx),
                                                     purpose=TREATMENT))


def grantee(ctx: AccessContext) -> str:
    """The caller's organization as consents name their grantee."""
    return f"Organization/{ctx.organization_id}"


# --- filters --------------------------------------------------------------------------------

def patient_scoped(ctx: AccessContext) -> bool:
    """SMART ``patient/`` scopes only: the token is limited to one patient's compartment.

    That patient is the caller's own (a patient's profile); a token with only ``patient/``
    scopes and no patient in context sees nothing.
    """
    scopes = ctx.scopes.scopes if ctx.scopes is not None else ()
    return bool(scopes) and all(scope.context == "patient" for scope in scopes)


def _ownership(ctx: AccessContext) -> tuple[str, str] | None:
    """The one column and value that make a row the caller's, by role.

    Clinicians and integrations own their organization's records (decided at write time,
    ``ehr.services.storage``: one indexed equality); a patient owns their compartment.
    """
    if ctx.role in CHART_ROLES and ctx.organization_id:
        return "organization_id", ctx.organization_id
    if ctx.role == Role.PATIENT and ctx.patient_id:
        return "patient_id", ctx.patient_id
    return None


def owns(ctx: AccessContext, row: Any) -> bool:
    """``owned`` evaluated on one row already in hand (no query)."""
    ownership = _ownership(ctx)
    return ownership is not None and getattr(row, ownership[0]) == ownership[1]


def owned(ctx: AccessContext) -> Q:
    """Rows the role rules allow, scopes aside (deleted ones included)."""
    ownership = _ownership(ctx)
    return Q(**{ownership[0]: ownership[1]}) if ownership else NOTHING
