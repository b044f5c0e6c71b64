"""Issue 11, finding 1: nested or huge JSON is refused before any recursive parse, at every door.

Once web3 is imported the recursion limit is 100,000, and a Bundle nested 100k deep made the
C JSON decoder overflow the stack of the gunicorn worker (a segfault, not even a 500).
``ehr.fhirjson.check_bounds`` now scans the text without recursion first: too deep is 400,
too many values 413, both an OperationOutcome, and nothing is written.
"""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ParseError

from config.parsers import BoundedJSONParser, JsonTooLarge
from ehr import fhirjson
from ehr.models import ResourceVersion
from tests.ehr.conftest import patient

from .conftest import resource_count

MAX_DEPTH = fhirjson.LIMITS.max_depth
SMALL_MAX_VALUES = 5_000  # the tests' bound, so that a "wide" body stays small


@pytest.fixture
def few_values(monkeypatch):
    """FHIR_JSON_MAX_VALUES lowered for the test (the real one is 2,000,000)."""
    monkeypatch.setattr(fhirjson.LIMITS, "max_values", SMALL_MAX_VALUES)


def nested(depth: int, kind: str) -> str:
    """A JSON value ``depth`` containers deep: arrays, objects or both in turn."""
    opening = {"array": "[", "object": '{"a":', "mixed": None}[kind]
    if opening is None:
        opens = "".join('{"a":[' for _ in range(depth // 2)) + ("[" if depth % 2 else "")
        closes = ("]" if depth % 2 else "") + "]}" * (depth // 2)
        return opens + "1" + closes
    return opening * depth + "1" + ("]" if kind == "array" else "}") * depth


def wide(values: int) -> str:
    return "[" + ",".join(["0"] * values) + "]"


# ---------------------------------------------------------------------------------------------
# The scan itself (pure): its depth is the decoder's, for any JSON whatever its strings hold.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('[]{},:"\\ aé\u20ac\U0001f600'))
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=40,
)


def true_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES, st.booleans())
def test_the_scan_measures_the_depth_the_decoder_would_reach(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)

    depth, values = fhirjson._shape(text.encode("utf-8"))

    assert depth == true_depth(value)
    assert values >= fhirjson.measure(value, limit=10**9)[1] - 1


def test_a_100k_deep_bundle_is_refused_even_under_web3s_recursion_limit(hospital_a):
    """The red team's crash, replayed in-process: it used to take the worker down."""
    before, limit = resource_count(), sys.getrecursionlimit()
    body = ('{"resourceType":"Bundle","type":"batch","entry":[{"request":' + nested(100_000, "object")
            + ',"resource":{"resourceType":"Patient"}}]}')
    sys.setrecursionlimit(100_000)
    try:
        response = hospital_a.integration.post("/fhir", body)
    finally:
        sys.setrecursionlimit(limit)

    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert resource_count() == before


def test_real_fhir_depth_passes(hospital_a):
    """A Questionnaire nested 23 groups deep (47 JSON levels) is stored: the cap is far above FHIR's needs."""
    item = {"linkId": "leaf", "type": "display", "text": "x"}
    for level in range(22):
        item = {"linkId": f"g{level}", "type": "group", "item": [item]}
    questionnaire = {"resourceType": "Questionnaire", "status": "active", "item": [item]}

    created = hospital_a.integration.create(questionnaire)

    assert created["item"][0]["linkId"] == "g21"


def test_nesting_at_the_cap_validates_without_recursion_errors(hospital_a, patient_of_a):
    """49 nested extensions (99 levels, just under the cap) through pydantic and the indexer."""
    extension = {"url": "http://example.org/x", "valueString": "v"}
    for _ in range(48):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    body = {**patient(), "extension": [extension]}
    assert fhirjson._shape(json.dumps(body).encode())[0] == MAX_DEPTH - 1
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        response = hospital_a.integration.post("/fhir/Patient", body)
    finally:
        sys.setrecursionlimit(limit)

    assert response.status_code == 201, response.content[:300]


# ---------------------------------------------------------------------------------------------
# Every JSON door, every shape: 400 or 413 with an OperationOutcome, never 5xx, nothing written.

SHAPES = st.one_of(
    st.tuples(st.sampled_from(["array", "object", "mixed"]), st.integers(MAX_DEPTH + 1, 20_000)),
    st.tuples(st.just("wide"), st.integers(SMALL_MAX_VALUES + 1, 3 * SMALL_MAX_VALUES)),
)
DOORS = ["create", "update", "conditional-update", "patch", "batch", "transaction", "batch-entry-resource",
         "search-post"]


def door_request(door: str, payload: str, patient_id: str) -> tuple[str, str, str, str]:
    """(method, path, content type, body) putting ``payload`` where that door parses JSON."""
    resource = '{"resourceType":"Patient","id":"%s","extension":[{"url":"http://x","valueString":"v"}],"x":%s}'
    if door == "create":
        return "post", "/fhir/Patient", "application/fhir+json", resource % ("n", payload)
    if door == "update":
        return "put", f"/fhir/Patient/{patient_id}", "application/fhir+json", resource % (patient_id, payload)
    if door == "conditional-update":
        return "put", f"/fhir/Patient?_id={patient_id}", "application/fhir+json", resource % (patient_id, payload)
    if door == "patch":
        body = '[{"op":"add","path":"/extension/0/valueString","value":%s}]' % payload
        return "patch", f"/fhir/Patient/{patient_id}", "application/json-patch+json", body
    if door in ("batch", "transaction"):
        body = ('{"resourceType":"Bundle","type":"%s","entry":[{"request":{"method":"POST","url":"Patient",'
                '"x":%s},"resource":{"resourceType":"Patient"}}]}' % (door, payload))
        return "post", "/fhir", "application/fhir+json", body
    if door == "batch-entry-resource":
        body = ('{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST",'
                '"url":"Patient"},"resource":%s}]}' % (resource % ("n", payload)))
        return "post", "/fhir", "application/fhir+json", body
    return "post", "/fhir/Patient/_search", "application/json", payload  # read as a form, never as JSON


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(door=st.sampled_from(DOORS), shape=SHAPES)
def test_every_json_door_refuses_deep_or_wide_json(hospital_a, patient_of_a, few_values, door, shape):
    kind, size = shape
    payload = wide(size) if kind == "wide" else nested(size, kind)
    method, path, content_type, body = door_request(door, payload, patient_of_a["id"])
    before, versions = resource_count(), ResourceVersion.objects.count()
    fhir = hospital_a.integration

    response = getattr(fhir.client, method)(path, body, content_type=content_type, **fhir.auth)

    expected = range(200, 500) if door == "search-post" else (413,) if kind == "wide" else (400,)
    assert response.status_code in expected, (door, kind, size, response.content[:300])
    assert response.json()["resourceType"] == ("Bundle" if response.status_code == 200 else "OperationOutcome")
    assert (resource_count(), ResourceVersion.objects.count()) == (before, versions)


@pytest.mark.parametrize("path", ["/api/ledger/audit-events/1/proof", "/dicomweb/studies"])
def test_other_doors_refuse_a_deep_json_body_without_5xx(hospital_a, path):
    """/api/ledger takes no JSON body (405), DICOMweb only multipart DICOM (415)."""
    fhir = hospital_a.integration
    before = resource_count()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        response = fhir.client.post(path, nested(100_000, "array"), content_type="application/json", **fhir.auth)
    finally:
        sys.setrecursionlimit(limit)

    assert 400 <= response.status_code < 500, response.content[:300]
    assert resource_count() == before


class _Stream:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def test_the_api_json_parser_is_bounded(few_values):
    """DRF's parser for every /api/ view (REST_FRAMEWORK DEFAULT_PARSER_CLASSES)."""
    parser = BoundedJSONParser()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        with pytest.raises(ParseError):
            parser.parse(_Stream(nested(100_000, "array").encode()))
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(JsonTooLarge):
        parser.parse(_Stream(wide(SMALL_MAX_VALUES + 1).encode()))
    with pytest.raises(ParseError):
        parser.parse(_Stream(b'{"a": NaN}'))
    assert parser.parse(_Stream(b'{"a": [1, {"b": "[[["}]}')) == {"a": [1, {"b": "[[["}]}


def test_rest_framework_uses_the_bounded_parser():
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_PARSER_CLASSES[0] is BoundedJSONParser


def test_nan_and_infinity_are_not_json(hospital_a):
    before = resource_count()

    response = hospital_a.integration.post(
        "/fhir/Observation", '{"resourceType":"Observation","status":"final","code":{"text":"x"},'
                             '"valueQuantity":{"value":NaN}}')

    assert response.status_code == 400
    assert response.json()["issue"][0]["code"] == "structure"
    assert resource_count() == before


def test_a_patch_that_copies_itself_into_a_bomb_is_refused(hospital_a, patient_of_a):
    """Each copy doubles the document: 40 copies would be 2^40 values, built before any check."""
    ops = [{"op": "add", "path": "/extension", "value": [{"url": "http://x", "valueString": "v"}]}]
    ops += [{"op": "copy", "from": "/extension", "path": "/extension/-"} for _ in range(40)]
    before = ResourceVersion.objects.count()

    response = hospital_a.integration.patch(f"/fhir/Patient/{patient_of_a['id']}", ops)

    assert response.status_code in (400, 413), response.content[:300]
    assert response.json()["issue"][0]["code"] == "too-costly"
    assert ResourceVersion.objects.count() == before


def test_a_patch_nesting_copies_past_the_cap_is_refused(hospital_a, patient_of_a):
    ops = [{"op": "add", "path": "/extension", "value": [{"url": "http://x", "extension": []}]}]
    path = "/extension/0"
    for _ in range(60):
        ops.append({"op": "copy", "from": "/extension/0", "path": path + "/extension/-"})
        path += "/extension/0"
    before = ResourceVersion.objects.count()

    response = hospital_a.integration.patch(f"/fhir/Patient/{patient_of_a['id']}", ops)

    assert response.status_code in (400, 413), response.content[:300]
    assert ResourceVersion.objects.count() == before


@pytest.mark.parametrize("ops", [
    [{"op": "copy", "from": 5, "path": "/gender"}],
    [{"op": "add", "path": 5, "value": 1}],
    [{"op": "copy", "path": "/gender"}],
])
def test_malformed_patch_operations_are_4xx(hospital_a, patient_of_a, ops):
    response = hospital_a.integration.patch(f"/fhir/Patient/{patient_of_a['id']}", ops)

    assert 400 <= response.status_code < 500, response.content[:300]
    assert response.json()["resourceType"] == "OperationOutcome"
