"""Decimals of any size and precision: accepted, stored verbatim, indexed without error, and
searchable by the implicit-precision rules (R4 search.html#number), through the HTTP API.

The bodies are sent as text: a JSON client library would turn ``1E+245`` or ``0.50`` into a
float first, and what these tests check is that the client's lexical form survives.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ehr.fhir import FhirError
from ehr.indexing import IndexValues
from ehr.indexing import QuantityValue as IndexQuantity
from ehr.models import QuantityIndex, Resource
from ehr.numeric import EXACT, INDEX_DIGITS, INDEX_MAX, INDEX_MAX_ADJUSTED, INDEX_MIN_EXPONENT, index_decimal
from ehr.search.values import number_value
from ehr.services.storage import write_indexes

from .conftest import patient

pytestmark = pytest.mark.django_db

# Every JSON number (RFC 8259) is a valid FHIR decimal: up to 41 significant digits here,
# exponents up to ±999 (far past float's), negative, zero and negative zero.
JSON_DECIMALS = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture
def subject(fhir) -> str:
    return "Patient/" + fhir.create(patient())["id"]


def observation_text(subject: str, code: str, value: str) -> str:
    return ('{"resourceType":"Observation","status":"final",'
            f'"code":{{"coding":[{{"system":"urn:decimals","code":"{code}"}}]}},'
            f'"subject":{{"reference":"{subject}"}},'
            f'"valueQuantity":{{"value":{value},"system":"http://unitsofmeasure.org","code":"mg"}}}}')


def create(fhir, subject: str, value: str, code: str | None = None) -> tuple[str, str]:
    """(id, code) of a new Observation whose value is ``value`` as written."""
    code = code or uuid.uuid4().hex
    response = fhir.post("/fhir/Observation", observation_text(subject, code, value))
    assert response.status_code == 201, (value, response.status_code, response.content[:300])
    return response.json()["id"], code


def found(fhir, code: str, search: str) -> list[str]:
    response = fhir.get("/fhir/Observation?" + urlencode({"code": f"urn:decimals|{code}",
                                                           "value-quantity": search, "_count": 100}))
    assert response.status_code == 200, (search, response.content[:300])
    return [entry["resource"]["id"] for entry in response.json().get("entry", [])]


def neighbours(text: str) -> tuple[str, str]:
    """The values one unit of the last digit below and above: outside the implicit range."""
    value = Decimal(text)
    unit = Decimal(1).scaleb(value.as_tuple().exponent)  # type: ignore[arg-type] - finite
    return str(EXACT.subtract(value, unit)), str(EXACT.add(value, unit))


@SETTINGS
@given(JSON_DECIMALS)
@example("1e+245")
@example("1E+245")
@example("0.0000000000000000000000001")
@example("123456789012345678901234567890")
@example("-1.23456789012345678901234567890e-300")
@example("-0.0")
@example("0")
def test_any_decimal_is_stored_verbatim_and_found_by_its_own_value(fhir, subject, text):
    created, code = create(fhir, subject, text)

    read = fhir.get(f"/fhir/Observation/{created}")
    assert f'"value":{text},' in read.content.decode()
    assert found(fhir, code, text) == [created]
    assert found(fhir, code, f"ge{text}") == found(fhir, code, f"le{text}") == [created]
    assert found(fhir, code, f"ne{text}") == found(fhir, code, f"gt{text}") == []
    below, above = neighbours(text)
    assert found(fhir, code, below) == found(fhir, code, above) == []
    assert found(fhir, code, f"gt{below}") == found(fhir, code, f"lt{above}") == [created]


def test_the_issue_example_matches_the_implicit_range(fhir, subject):
    code = uuid.uuid4().hex
    ids = {value: create(fhir, subject, value, code)[0] for value in
           ["5.394", "5.395", "5.4", "5.40", "5.4049999999999999999999999999999", "5.405", "5.41"]}

    matched = set(found(fhir, code, "5.40"))

    assert matched == {ids[v] for v in ["5.395", "5.4", "5.40", "5.4049999999999999999999999999999"]}


def test_thirty_digit_bounds_are_exact(fhir, subject):
    """The default decimal context (28 digits) would round the bounds of a 30-digit value."""
    value = "1.00000000000000000000000000001"
    created, code = create(fhir, subject, value)

    assert found(fhir, code, value) == [created]
    assert found(fhir, code, "1.00000000000000000000000000002") == []
    assert found(fhir, code, "ap1.00000000000000000000000000001") == [created]


@pytest.mark.parametrize("value", [
    "9.9e131070",  # the largest magnitude indexed exactly
    "-9.9e131070",
    "1e-16382",  # the smallest digit indexed exactly
    "1." + "2" * 2000,  # more significant digits than the index keeps: rounded, found by itself
    "-0." + "0" * 16381 + "1",
])
def test_values_at_the_edges_of_the_index_are_found_by_themselves(fhir, subject, value):
    created, code = create(fhir, subject, value)

    row = QuantityIndex.objects.get(resource__logical_id=created, param="value-quantity")
    assert row.value == index_decimal(Decimal(value))
    assert found(fhir, code, value) == [created]


@pytest.mark.parametrize("value", ["1e131071", "1e999999", "1.5e-16383", "1e-999999", "0e999999", "-0e-999999"])
def test_values_beyond_the_index_are_held_in_order_at_its_bounds(fhir, subject, value):
    created, code = create(fhir, subject, value)

    row = QuantityIndex.objects.get(resource__logical_id=created, param="value-quantity")
    assert row.value == index_decimal(Decimal(value))
    assert -INDEX_MAX <= row.value <= INDEX_MAX  # compared exactly (abs() rounds to 28 digits)
    assert row.value.is_zero() or not Decimal(value).is_zero()  # 0e999999 is no huge value
    stored = Resource.objects.get(logical_id=created).text
    assert f'"value":{value},' in stored


def test_a_search_beyond_the_index_range_is_400_naming_the_parameter(fhir):
    response = fhir.get("/fhir/Observation?" + urlencode({"value-quantity": "gt1e200000"}))

    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "value-quantity" in body["issue"][0]["diagnostics"]


def test_number_parameters_take_any_decimal_too(fhir, subject):
    text = ('{"resourceType":"RiskAssessment","status":"final",'
            f'"subject":{{"reference":"{subject}"}},'
            '"prediction":[{"probabilityDecimal":0.000000000000000000000000000012345678901234567890}]}')
    response = fhir.post("/fhir/RiskAssessment", text)
    assert response.status_code == 201, response.content[:300]

    def search(value: str) -> list[str]:
        result = fhir.get("/fhir/RiskAssessment?" + urlencode({"probability": value}))
        return [entry["resource"]["id"] for entry in result.json().get("entry", [])]

    assert search("1.2345678901234567890e-29") == [response.json()["id"]]
    assert search("1.2345678901234567891e-29") == []


def test_a_value_the_database_refuses_to_index_is_a_422_naming_the_element(fhir, subject):
    """Only reachable past ``ehr.numeric`` (here: a value handed to the writer unbounded)."""
    created, _ = create(fhir, subject, "1")
    row = Resource.objects.get(logical_id=created)
    rows_before = QuantityIndex.objects.filter(resource=row).count()
    beyond = IndexValues(quantities=[IndexQuantity("value-quantity", Decimal("1e200000"), None, None, None)])

    with pytest.raises(FhirError) as refused, transaction.atomic():
        write_indexes([row], [beyond])

    assert (refused.value.status, refused.value.code) == (422, "processing")
    assert "1e200000" not in refused.value.message.lower()
    assert [i["expression"] for i in refused.value.outcome()["issue"]] == [
        ["(Observation.value as Quantity) | (Observation.value as SampledData)"]]
    assert QuantityIndex.objects.filter(resource=row).count() == rows_before  # nothing half-written


def test_migration_0008_keeps_every_value_and_the_indexes():
    """numeric(38, 12) to numeric: the rows written before come through unchanged."""
    executor = MigrationExecutor(connection)
    executor.migrate([("ehr", "0007_subscriptions")])
    values = ["5.4", "-99999999999999999999999999.999999999999", "0.000000000001"]
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO ehr_resource (resource_type, logical_id, version_id, last_updated, deleted, "
                       "text) VALUES ('Observation', 'm', 1, now(), false, '{}') RETURNING id")
        (pk,) = cursor.fetchone()
        for value in values:
            cursor.execute("INSERT INTO ehr_quantityindex (resource_id, resource_type, param, value) "
                           "VALUES (%s, 'Observation', 'value-quantity', %s)", [pk, value])
            cursor.execute("INSERT INTO ehr_numberindex (resource_id, resource_type, param, value) "
                           "VALUES (%s, 'Observation', 'n', %s)", [pk, value])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE refuses pending FK checks

    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes("ehr"))

    with connection.cursor() as cursor:
        for table in ("ehr_quantityindex", "ehr_numberindex"):
            cursor.execute(f"SELECT value FROM {table} WHERE resource_id = %s ORDER BY id", [pk])
            assert [row[0] for row in cursor.fetchall()] == [Decimal(v) for v in values]
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname IN "
                       "('quantity_value', 'number_value', 'token_code', 'reference_target') ORDER BY 1")
        assert [row[0] for row in cursor.fetchall()] == [
            "number_value", "quantity_value", "reference_target", "token_code"]
        cursor.execute("SELECT DISTINCT data_type, numeric_precision FROM information_schema.columns "
                       "WHERE column_name = 'value' AND table_name IN ('ehr_quantityindex', 'ehr_numberindex')")
        assert cursor.fetchall() == [("numeric", None)]


# --- the index limits, without a database ---------------------------------------------------

ANY_DECIMALS = st.decimals(allow_nan=False, allow_infinity=False) | st.builds(
    lambda digits, exponent: Decimal(f"{digits}E{exponent}"),
    st.integers(min_value=-(10 ** 1200), max_value=10 ** 1200), st.integers(-10 ** 6, 10 ** 6))


@settings(max_examples=300, deadline=None)
@given(ANY_DECIMALS)
def test_every_indexed_value_and_its_search_bounds_fit_numeric(value):
    indexed = index_decimal(value)

    assert len(indexed.as_tuple().digits) <= INDEX_DIGITS
    assert indexed.is_zero() or indexed.adjusted() <= INDEX_MAX_ADJUSTED
    assert indexed.as_tuple().exponent >= INDEX_MIN_EXPONENT
    if indexed.is_zero() or indexed.adjusted() >= INDEX_MIN_EXPONENT:
        bounds = number_value("ap", str(indexed), "x")
        for bound in (bounds.low, bounds.high, bounds.value):
            assert bound.as_tuple().exponent >= INDEX_MIN_EXPONENT - 1  # numeric: 16,383 decimals
            assert bound.is_zero() or bound.adjusted() < INDEX_MAX_ADJUSTED + 2  # below 1e131072
