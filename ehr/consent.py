"""What a FHIR R4 Consent grants and denies, as flat rules the consent service can enforce.

Pure (no database): ``consent_rules(consent)`` reads a parsed Consent and returns one
``ConsentRule`` (the ledger's plain value, ``ledger.consents.rules``) per (grantee, purpose) of every permit and deny provision, nested
provisions included. A nested provision is an exception to its parent: it inherits the
parent's actors, purposes and period where it names none, and its period is cut to the
parent's. Only an ``active`` Consent grants or denies anything.

Fail closed: a permit is stored only if it can be enforced exactly, so it must name its
grantee (an Organization or a ResearchStudy) and its purpose of use, and it may not narrow
the data (``class``, ``code``, ``data``, ``dataPeriod``, ``securityLabel``) or the action to
something other than access/use; anything else is refused (422). A deny is never refused:
one that names other actors or narrows the data is enforced more broadly (any grantee).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from ehr.fhir import FhirError
from ledger.consents.rules import DENY, PERMIT, ConsentRule

GRANTEE_TYPES = ("Organization", "ResearchStudy")
PURPOSE_SYSTEMS = (
    "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "http://terminology.hl7.org/ValueSet/v3-PurposeOfUse",
)
PURPOSE_CODE = re.compile(r"^[A-Z]{2,16}$")
DATA_NARROWING = ("class", "code", "data", "dataPeriod", "securityLabel")
ACCESS_ACTIONS = {"access", "use"}
ACTION_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentaction"


def consent_rules(consent: dict) -> list[ConsentRule]:
    """Every rule of an active Consent (empty for any other status or without provision)."""
    provision = consent.get("provision")
    if consent.get("status") != "active" or not isinstance(provision, dict):
        return []
    return _walk(provision, kind=provision.get("type") or DENY, inherited=_Scope(), path="provision")


@dataclass(frozen=True)
class _Scope:
    grantees: tuple[str | None, ...] = (None,)
    purposes: tuple[str | None, ...] = (None,)
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    narrowed: bool = False


def _walk(provision: dict, *, kind: str, inherited: _Scope, path: str) -> list[ConsentRule]:
    scope = _scope(provision, inherited, path)
    if kind == PERMIT:
        _check_enforceable(scope, provision, path)
    rules = [ConsentRule(kind, grantee, purpose, scope.valid_from, scope.valid_until)
             for grantee in scope.grantees for purpose in scope.purposes]
    for index, nested in enumerate(provision.get("provision") or []):
        nested_kind = nested.get("type") or kind
        rules.extend(_walk(nested, kind=nested_kind, inherited=scope, path=f"{path}.provision[{index}]"))
    return rules


def _scope(provision: dict, inherited: _Scope, path: str) -> _Scope:
    scope = inherited
    actors = [_grantee(actor) for actor in provision.get("actor") or []]
    if actors:
        # A deny naming someone we cannot map to a grantee applies to every grantee.
        scope = replace(scope, grantees=(None,) if None in actors else tuple(dict.fromkeys(actors)))
    purposes = [_purpose(coding, path) for coding in provision.get("purpose") or []]
    if purposes:
        scope = replace(scope, purposes=tuple(dict.fromkeys(purposes)))
    period = provision.get("period") or {}
    start, end = _instant(period.get("start"), end=False), _instant(period.get("end"), end=True)
    scope = replace(scope, valid_from=_later(scope.valid_from, start), valid_until=_earlier(scope.valid_until, end))
    narrowed = any(provision.get(name) for name in DATA_NARROWING) or not _actions_allow_access(provision)
    return replace(scope, narrowed=scope.narrowed or narrowed)


def _check_enforceable(scope: _Scope, provision: dict, path: str) -> None:
    if None in scope.grantees:
        raise _refused(f"{path}: a permit must name its grantee (actor.reference to "
                       f"{' or '.join(GRANTEE_TYPES)})")
    if None in scope.purposes:
        raise _refused(f"{path}: a permit must name its purpose of use (v3 PurposeOfUse code)")
    if scope.narrowed:
        raise _refused(f"{path}: a permit limited to some data or actions is not supported; "
                       "grant access/use to the whole record or deny the exceptions")
    if scope.valid_until and scope.valid_from and scope.valid_until <= scope.valid_from:
        raise _refused(f"{path}: the period ends before it starts")


def _grantee(actor: dict) -> str | None:
    reference = ((actor or {}).get("reference") or {}).get("reference") or ""
    kind, _, logical_id = reference.partition("/")
    return reference if kind in GRANTEE_TYPES and logical_id and "/" not in logical_id else None


def _purpose(coding: dict, path: str) -> str:
    code = (coding or {}).get("code") or ""
    system = (coding or {}).get("system")
    if system not in PURPOSE_SYSTEMS or not PURPOSE_CODE.match(code):
        raise _refused(f"{path}.purpose: expected a v3 PurposeOfUse code ({PURPOSE_SYSTEMS[0]}), "
                       f"got {code or 'none'!r}")
    return code


def _actions_allow_access(provision: dict) -> bool:
    codes = {coding.get("code") for action in provision.get("action") or []
             for coding in action.get("coding") or [] if coding.get("system") == ACTION_SYSTEM}
    return not provision.get("action") or bool(codes & ACCESS_ACTIONS)


def _instant(value: str | None, *, end: bool) -> datetime | None:
    """A FHIR date or dateTime as an instant; an end date covers its whole day (exclusive bound)."""
    if not value:
        return None
    if len(value) == 4:
        moment = datetime(int(value), 1, 1, tzinfo=UTC)
        return moment.replace(year=moment.year + 1) if end else moment
    if len(value) == 7:
        year, month = int(value[:4]), int(value[5:7])
        moment = datetime(year, month, 1, tzinfo=UTC)
        return (datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC) if end else moment)
    if len(value) == 10:
        moment = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return moment + timedelta(days=1) if end else moment
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    return max(x for x in (a, b) if x) if (a or b) else None


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    return min(x for x in (a, b) if x) if (a or b) else None


def _refused(message: str) -> FhirError:
    return FhirError(422, "business-rule", message)
