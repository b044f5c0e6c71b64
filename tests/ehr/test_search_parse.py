"""Search parsing: values, prefixes, modifiers, escapes, result parameters (no database)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from ehr.search import DEFAULT_COUNT, MAX_COUNT, SearchError, parse_search
from ehr.search.query import Include
from ehr.search.values import (
    QuantityValue,
    ReferenceValue,
    TokenValue,
    split_escaped,
    unescape,
)

UTC = timezone.utc


def parse(resource_type, *params, strict=False):
    return parse_search(resource_type, list(params), strict=strict)


def only(query):
    assert len(query.criteria) == 1
    return query.criteria[0]


def error(resource_type, *params, strict=False) -> SearchError:
    with pytest.raises(SearchError) as caught:
        parse(resource_type, *params, strict=strict)
    return caught.value


# --- escapes -------------------------------------------------------------------------------


def test_split_escaped_keeps_escaped_separators_inside_one_part():
    assert split_escaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert split_escaped(r"a\\,b", ",") == [r"a\\", "b"]
    assert split_escaped("a,,b", ",") == ["a", "", "b"]


def test_unescape_removes_only_fhir_escapes():
    assert unescape(r"a\,b\|c\$d\\e\n") == r"a,b|c$d\e\n"


def test_escaped_comma_is_one_value_not_an_or():
    criterion = only(parse("Patient", ("family", r"smith\,jr")))
    assert criterion.values == ("smith,jr",)


def test_escaped_bar_in_token_is_part_of_the_code():
    criterion = only(parse("Observation", ("code", r"http://s|a\|b")))
    assert criterion.values == (TokenValue(system="http://s", code="a|b"),)


# --- string --------------------------------------------------------------------------------


def test_string_values_are_normalized_and_ored():
    criterion = only(parse("Patient", ("name", "  Zoë   SMITH ,Éric")))
    assert criterion.param.type == "string"
    assert criterion.modifier is None
    assert criterion.values == ("zoe smith", "eric")


def test_string_exact_keeps_the_value_as_written():
    criterion = only(parse("Patient", ("family:exact", "Zoë")))
    assert (criterion.modifier, criterion.values) == ("exact", ("Zoë",))


def test_string_contains_is_normalized():
    criterion = only(parse("Patient", ("family:contains", "MIT")))
    assert (criterion.modifier, criterion.values) == ("contains", ("mit",))


def test_empty_value_in_an_or_list_is_rejected():
    assert "family" in error("Patient", ("family", "a,")).message


def test_string_modifier_not_is_unknown_for_strings():
    problem = error("Patient", ("family:not", "x"))
    assert problem.code == "invalid"
    assert "family:not" in problem.message


# --- token ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("1234-5", TokenValue(system=None, code="1234-5")),
    ("|1234-5", TokenValue(system="", code="1234-5")),
    ("http://loinc.org|1234-5", TokenValue(system="http://loinc.org", code="1234-5")),
    ("http://loinc.org|", TokenValue(system="http://loinc.org", code=None)),
])
def test_token_forms(text, expected):
    assert only(parse("Observation", ("code", text))).values == (expected,)


@pytest.mark.parametrize("text", ["|", "a|b|c"])
def test_malformed_tokens_are_rejected(text):
    problem = error("Observation", ("code", text))
    assert problem.code == "invalid"
    assert "code" in problem.message


def test_token_not_and_text_modifiers():
    assert only(parse("Observation", ("code:not", "x"))).modifier == "not"
    text = only(parse("Observation", ("code:text", "Glucose|Blood")))
    assert (text.modifier, text.values) == ("text", ("glucose|blood",))


@pytest.mark.parametrize("modifier", ["in", "below", "of-type", "not-in"])
def test_known_but_unsupported_token_modifiers(modifier):
    problem = error("Observation", (f"code:{modifier}", "x"))
    assert problem.code == "not-supported"


def test_unknown_modifier_is_invalid():
    problem = error("Observation", ("code:bogus", "x"))
    assert (problem.code, "code:bogus" in problem.message) == ("invalid", True)


# --- date ----------------------------------------------------------------------------------


def test_date_without_prefix_is_eq_with_the_precision_range():
    (value,) = only(parse("Patient", ("birthdate", "1970"))).values
    assert value.prefix == "eq"
    assert value.low == datetime(1970, 1, 1, tzinfo=UTC)
    assert value.high == datetime(1970, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("prefix", ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"])
def test_every_date_prefix(prefix):
    (value,) = only(parse("Patient", ("birthdate", f"{prefix}1970-03"))).values
    assert (value.prefix, value.low) == (prefix, datetime(1970, 3, 1, tzinfo=UTC))
    assert value.high == datetime(1970, 3, 31, 23, 59, 59, 999999, tzinfo=UTC)


@pytest.mark.parametrize("text", ["xx1970", "1970-13-45", "yesterday", "ge", "19700"])
def test_bad_dates_name_the_parameter(text):
    problem = error("Patient", ("birthdate", text))
    assert problem.code == "invalid"
    assert problem.message.startswith("birthdate:")


def test_unknown_prefix_is_named():
    assert "unknown prefix 'xx'" in error("Patient", ("birthdate", "xx1970")).message


# --- number and quantity -------------------------------------------------------------------


def test_number_implicit_precision():
    (value,) = only(parse("RiskAssessment", ("probability", "100"))).values
    assert (value.prefix, value.value, value.low, value.high) == (
        "eq", Decimal("100"), Decimal("99.5"), Decimal("100.5"))
    (value,) = only(parse("RiskAssessment", ("probability", "gt0.80"))).values
    assert (value.prefix, value.low, value.high) == ("gt", Decimal("0.795"), Decimal("0.805"))


def test_number_with_exponent():
    (value,) = only(parse("RiskAssessment", ("probability", "1e2"))).values
    assert (value.low, value.high) == (Decimal("50"), Decimal("150"))


@pytest.mark.parametrize("text", ["abc", "1.2.3", "gt", "1,", "NaN", "Infinity"])
def test_bad_numbers(text):
    assert error("RiskAssessment", ("probability", text)).message.startswith("probability:")


def test_quantity_forms():
    full = only(parse("Observation", ("value-quantity", "le5.4|http://unitsofmeasure.org|mg")))
    (value,) = full.values
    assert isinstance(value, QuantityValue)
    assert (value.number.prefix, value.number.value) == ("le", Decimal("5.4"))
    assert (value.system, value.code) == ("http://unitsofmeasure.org", "mg")
    (bare,) = only(parse("Observation", ("value-quantity", "5.4"))).values
    assert (bare.system, bare.code) == (None, None)
    (code_only,) = only(parse("Observation", ("value-quantity", "5.4||mg"))).values
    assert (code_only.system, code_only.code) == (None, "mg")


def test_quantity_with_two_parts_is_rejected():
    assert "value-quantity" in error("Observation", ("value-quantity", "5.4|mg")).message


# --- reference -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("Patient/123", ReferenceValue("Patient", "123", None)),
    ("Patient/123/_history/2", ReferenceValue("Patient", "123", None)),
    ("123", ReferenceValue(None, "123", None)),
    ("http://other.org/fhir/Patient/123", ReferenceValue(None, None, "http://other.org/fhir/Patient/123")),
])
def test_reference_forms(text, expected):
    assert only(parse("Observation", ("subject", text))).values == (expected,)


def test_reference_type_modifier():
    criterion = only(parse("Observation", ("subject:Patient", "123")))
    assert criterion.modifier == "Patient"


def test_reference_type_modifier_must_be_a_target():
    problem = error("Observation", ("subject:Medication", "123"))
    assert "not a target" in problem.message


def test_reference_garbage_is_rejected():
    assert error("Observation", ("subject", "not a ref")).message.startswith("subject:")


def test_chain_with_type_modifier():
    criterion = only(parse("Observation", ("subject:Patient.identifier", "http://mrn|42")))
    assert criterion.chain_types == ("Patient",)
    assert criterion.chain.param.code == "identifier"
    assert criterion.chain.values == (TokenValue("http://mrn", "42"),)


def test_chain_without_type_uses_every_target_with_the_parameter():
    criterion = only(parse("Observation", ("subject.name", "smith")))
    assert criterion.chain_types == ("Patient", "Location")  # Group and Device have no "name"
    assert criterion.chain.values == ("smith",)


def test_chain_of_two_levels_is_not_supported():
    problem = error("Observation", ("subject.organization.name", "x"))
    assert problem.code == "not-supported"


def test_chain_on_a_non_reference_is_invalid():
    assert error("Patient", ("name.family", "x")).code == "invalid"


def test_chain_to_unknown_parameter_is_a_warning_or_strict_error():
    query = parse("Observation", ("patient.bogus", "x"))
    assert query.criteria == []
    assert query.warnings == ["patient.bogus: no target type of patient has a search parameter"
                              " 'bogus' (ignored)"]
    assert error("Observation", ("patient.bogus", "x"), strict=True).code == "not-supported"


# --- uri, missing --------------------------------------------------------------------------


def test_uri_modifiers():
    assert only(parse("ValueSet", ("url:below", "http://a/b"))).modifier == "below"
    assert only(parse("ValueSet", ("url:above", "http://a/b"))).modifier == "above"


@pytest.mark.parametrize("name", ["family", "code", "birthdate", "subject", "url"])
def test_missing_takes_true_or_false(name):
    resource_type = {"family": "Patient", "birthdate": "Patient", "url": "ValueSet"}.get(
        name, "Observation")
    assert only(parse(resource_type, (f"{name}:missing", "true"))).values == (True,)
    assert only(parse(resource_type, (f"{name}:missing", "false"))).values == (False,)
    assert ":missing" in error(resource_type, (f"{name}:missing", "yes")).message


# --- unknown parameters and types ----------------------------------------------------------


def test_unknown_parameter_is_a_warning_and_not_applied():
    query = parse("Patient", ("bogus", "1"), ("family", "x"))
    assert query.warnings == ["unknown search parameter 'bogus' for Patient (ignored)"]
    assert query.applied == [("family", "x")]
    assert [c.param.code for c in query.criteria] == ["family"]


def test_unknown_parameter_in_strict_mode_is_an_error():
    problem = error("Patient", ("bogus", "1"), strict=True)
    assert (problem.code, "bogus" in problem.message) == ("not-supported", True)


def test_unsupported_parameter_types_are_treated_as_unknown():
    query = parse("Observation", ("code-value-quantity", "x$5"), ("_text", "1"))
    assert query.criteria == []
    assert len(query.warnings) == 2


def test_reverse_chaining_is_refused_not_ignored():
    problem = error("Patient", ("_has:Observation:patient:code", "1234"))
    assert (problem.code, problem.message) == ("not-supported", "search parameter '_has' is not supported")


def test_unknown_resource_type():
    problem = error("Bogus", ("_id", "1"))
    assert (problem.code, problem.message) == ("not-supported", "unknown resource type 'Bogus'")


def test_format_and_pretty_are_silently_ignored():
    query = parse("Patient", ("_format", "json"), ("_pretty", "true"))
    assert (query.criteria, query.warnings, query.applied) == ([], [], [])


def test_and_of_repeated_parameters_keeps_order():
    query = parse("Patient", ("family", "a"), ("family", "b,c"))
    assert [c.values for c in query.criteria] == [("a",), ("b", "c")]
    assert query.applied == [("family", "a"), ("family", "b,c")]


# --- system search -------------------------------------------------------------------------


def test_system_search_accepts_common_parameters_only():
    query = parse(None, ("_id", "1"), ("_lastUpdated", "gt2020"), ("family", "x"),
                  ("_type", "Patient,Observation"))
    assert [c.param.code for c in query.criteria] == ["_id", "_lastUpdated"]
    assert query.types == ("Patient", "Observation")
    assert query.warnings == ["unknown search parameter 'family' for a system search (ignored)"]


def test_type_on_a_type_search_is_ignored_with_a_warning():
    query = parse("Patient", ("_type", "Observation"))
    assert (query.types, query.warnings) == ((), ["_type applies to a system search only (ignored)"])


def test_unknown_type_in_type_parameter():
    assert error(None, ("_type", "Patient,Bogus")).message == "_type: unknown resource type 'Bogus'"


def test_id_modifiers():
    assert only(parse("Patient", ("_id:not", "a"))).modifier == "not"
    assert error("Patient", ("_id:text", "a")).code == "not-supported"


# --- result parameters ---------------------------------------------------------------------


def test_count_defaults_caps_and_rejects_garbage():
    assert parse("Patient").count == DEFAULT_COUNT
    capped = parse("Patient", ("_count", "100000"))
    assert capped.count == MAX_COUNT
    assert capped.warnings == [f"_count=100000 reduced to the maximum {MAX_COUNT}"]
    assert parse("Patient", ("_count", "0")).count == 0
    for bad in ("-1", "ten", "1.5", ""):
        assert error("Patient", ("_count", bad)).message.startswith("_count:")


def test_offset():
    assert parse("Patient", ("_offset", "40")).offset == 40
    assert error("Patient", ("_offset", "-1")).code == "invalid"


def test_sort_keys():
    query = parse("Encounter", ("_sort", "-date,_id,status"))
    assert [(k.param.code, k.descending) for k in query.sort] == [
        ("date", True), ("_id", False), ("status", False)]
    assert query.applied == [("_sort", "-date,_id,status")]


def test_sort_by_unknown_parameter():
    query = parse("Encounter", ("_sort", "bogus,-date"))
    assert [(k.param.code, k.descending) for k in query.sort] == [("date", True)]
    assert query.applied == [("_sort", "-date")]
    assert len(query.warnings) == 1
    assert error("Encounter", ("_sort", "bogus"), strict=True).code == "not-supported"
    assert error("Encounter", ("_sort", "date,,_id")).code == "invalid"


def test_includes():
    query = parse("Observation", ("_include", "Observation:subject:Patient"),
                  ("_include:iterate", "Patient:general-practitioner"),
                  ("_revinclude", "Provenance:target"), ("_include", "*"))
    assert query.includes == [
        Include("Observation", "subject", "Patient", iterate=False, reverse=False),
        Include("Patient", "general-practitioner", None, iterate=True, reverse=False),
        Include("Provenance", "target", None, iterate=False, reverse=True),
        Include(None, None, None, iterate=False, reverse=False),
    ]


@pytest.mark.parametrize("value", ["Observation", "Bogus:subject", "Observation:subject:Bogus",
                                   "Observation::Patient", "a:b:c:d"])
def test_malformed_includes(value):
    assert error("Observation", ("_include", value)).message.startswith("_include:")


def test_include_of_a_non_reference_parameter():
    query = parse("Observation", ("_include", "Observation:code"))
    assert (query.includes, len(query.warnings)) == ([], 1)
    assert error("Observation", ("_include", "Observation:code"), strict=True).code == "not-supported"


def test_include_bad_modifier():
    assert error("Observation", ("_include:deep", "Observation:subject")).code == "invalid"


def test_summary_and_elements_and_total():
    assert parse("Patient", ("_summary", "true")).summary == "true"
    assert parse("Patient", ("_summary", "false")).summary is None
    counted = parse("Patient", ("_summary", "count"))
    assert (counted.summary, counted.count) == ("count", 0)
    assert parse("Patient", ("_elements", "name, birthDate")).elements == ("name", "birthDate")
    assert parse("Patient", ("_total", "none")).total == "none"
    assert parse("Patient").total == "accurate"


@pytest.mark.parametrize(("name", "value"), [("_summary", "yes"), ("_total", "some"),
                                             ("_elements", "a.b"), ("_elements", ",")])
def test_bad_result_parameters(name, value):
    assert error("Patient", (name, value)).message.startswith(name)


def test_summary_with_elements_is_rejected():
    assert error("Patient", ("_summary", "true"), ("_elements", "name")).code == "invalid"


def test_applied_parameters_are_normalized_once_each():
    query = parse("Patient", ("_total", "none"), ("family", "x"), ("_total", "accurate"),
                  ("_elements", "name,gender"), ("bogus", "1"), ("_count", "5"))
    assert query.applied == [("family", "x"), ("_total", "accurate"), ("_elements", "name,gender")]
