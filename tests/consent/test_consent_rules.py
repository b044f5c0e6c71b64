"""What a FHIR Consent grants and denies (ehr.consent): pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ehr.consent import DENY, PERMIT, ConsentRule, consent_rules
from ehr.fhir import FhirError

V3 = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def purpose(code: str) -> dict:
    return {"system": V3, "code": code}


def actor(reference: str) -> dict:
    return {"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                 "code": "IRCP"}]}, "reference": {"reference": reference}}


def consent(provision: dict | None, status: str = "active") -> dict:
    body = {"resourceType": "Consent", "status": status, "patient": {"reference": "Patient/p1"}}
    if provision is not None:
        body["provision"] = provision
    return body


def test_permit_gives_one_rule_per_grantee_and_purpose():
    rules = consent_rules(consent({
        "type": "permit", "actor": [actor("Organization/b"), actor("ResearchStudy/s1")],
        "purpose": [purpose("TREAT"), purpose("HRESCH")],
        "period": {"start": "2026-01-01", "end": "2026-12-31"},
    }))

    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    assert set(rules) == {ConsentRule(PERMIT, g, p, start, end)
                          for g in ("Organization/b", "ResearchStudy/s1") for p in ("TREAT", "HRESCH")}


def test_nested_deny_inherits_grantee_and_cuts_period():
    rules = consent_rules(consent({
        "type": "permit", "actor": [actor("Organization/b")], "purpose": [purpose("TREAT")],
        "provision": [{"type": "deny", "period": {"start": "2026-06-01T00:00:00Z",
                                                   "end": "2026-07-01T00:00:00Z"}}],
    }))

    assert rules[1] == ConsentRule(DENY, "Organization/b", "TREAT", datetime(2026, 6, 1, tzinfo=UTC),
                                   datetime(2026, 7, 1, tzinfo=UTC))


def test_deny_without_actor_or_purpose_denies_everyone_for_everything():
    assert consent_rules(consent({"type": "deny"})) == [ConsentRule(DENY, None, None, None, None)]


def test_deny_naming_a_practitioner_applies_to_every_grantee():
    rules = consent_rules(consent({"type": "deny", "actor": [actor("Practitioner/x")]}))

    assert rules == [ConsentRule(DENY, None, None, None, None)]


@pytest.mark.parametrize("status", ["draft", "proposed", "inactive", "rejected", "entered-in-error"])
def test_only_active_consents_count(status):
    assert consent_rules(consent({"type": "permit", "actor": [actor("Organization/b")],
                                  "purpose": [purpose("TREAT")]}, status=status)) == []


@pytest.mark.parametrize(("provision", "message"), [
    ({"type": "permit", "purpose": [purpose("TREAT")]}, "must name its grantee"),
    ({"type": "permit", "actor": [actor("Practitioner/x")], "purpose": [purpose("TREAT")]},
     "must name its grantee"),
    ({"type": "permit", "actor": [actor("Organization/b")]}, "must name its purpose"),
    ({"type": "permit", "actor": [actor("Organization/b")], "purpose": [{"system": "x", "code": "TREAT"}]},
     "v3 PurposeOfUse"),
    ({"type": "permit", "actor": [actor("Organization/b")], "purpose": [purpose("TREAT")],
      "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"}]},
     "limited to some data"),
    ({"type": "permit", "actor": [actor("Organization/b")], "purpose": [purpose("TREAT")],
      "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                              "code": "collect"}]}]}, "limited to some data or actions"),
    ({"type": "permit", "actor": [actor("Organization/b")], "purpose": [purpose("TREAT")],
      "period": {"start": "2027-01-01", "end": "2026-01-01"}}, "ends before it starts"),
])
def test_permits_that_cannot_be_enforced_exactly_are_refused(provision, message):
    with pytest.raises(FhirError) as refused:
        consent_rules(consent(provision))

    assert refused.value.status == 422
    assert message in str(refused.value.outcome())


def test_permit_with_access_action_is_accepted():
    rules = consent_rules(consent({
        "type": "permit", "actor": [actor("Organization/b")], "purpose": [purpose("TREAT")],
        "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                "code": "access"}]}],
    }))

    assert [(r.kind, r.grantee, r.purpose) for r in rules] == [(PERMIT, "Organization/b", "TREAT")]
