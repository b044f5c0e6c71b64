"""SMART scope parsing, v1 and v2, without a database."""

import pytest

from access.scopes import Scope, is_valid_scope, parse_scopes


def test_v2_scopes_parse_into_contexts_types_and_actions():
    parsed = parse_scopes("patient/Observation.rs system/*.cruds openid")

    assert parsed.scopes == (Scope("patient", "Observation", frozenset("rs")),
                             Scope("system", "*", frozenset("cruds")))
    assert parsed.other == frozenset({"openid"})
    assert parsed.raw == "patient/Observation.rs system/*.cruds openid"


def test_v1_read_write_and_star_map_to_v2_actions():
    parsed = parse_scopes("patient/*.read user/Observation.write user/Patient.*")

    assert [s.actions for s in parsed.scopes] == [frozenset("rs"), frozenset("cud"), frozenset("cruds")]


def test_allows_and_contexts_for():
    parsed = parse_scopes("patient/*.rs user/Observation.cruds launch/patient fhirUser")

    assert parsed.allows("Observation", "u")
    assert not parsed.allows("Patient", "u")
    assert parsed.contexts_for("Observation", "r") == {"patient", "user"}
    assert parsed.contexts_for("Condition", "d") == set()
    assert parsed.other == {"launch/patient", "fhirUser"}


def test_within_checks_each_scope_against_the_allowed_set():
    allowed = parse_scopes("system/*.cruds openid")

    assert parse_scopes("system/Observation.rs openid").within(allowed)
    assert not parse_scopes("user/Observation.rs").within(allowed)
    assert not parse_scopes("system/*.rs offline_access").within(allowed)


@pytest.mark.parametrize("text, message", [
    ("patient/Observation.sr", "order"),
    ("patient/Observation.x", "actions"),
    ("patient/Observation.", "not <patient|user|system>"),
    ("user/observation.rs", "not <patient|user|system>"),
    ("system/Observation", "not <patient|user|system>"),
    ("patient/Observation.rs?category=laboratory", "granular"),
])
def test_malformed_resource_scopes_raise_a_clear_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        parse_scopes(f"openid {text}")


def test_empty_text_is_an_empty_scope_set():
    parsed = parse_scopes("")

    assert parsed.scopes == () and not parsed.allows("Patient", "r")


def test_is_valid_scope_knows_launch_scopes_and_rejects_others():
    assert all(is_valid_scope(s) for s in ("openid", "fhirUser", "launch", "launch/patient",
                                           "offline_access", "system/*.cruds", "user/*.read"))
    assert not any(is_valid_scope(s) for s in ("admin", "read", "launch/other", "user/*.x"))
