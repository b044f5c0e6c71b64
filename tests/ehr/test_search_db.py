"""Search against PostgreSQL: the R4 edge cases of each parameter type, paging, includes, bundles."""

from __future__ import annotations

import json
from datetime import timezone
from urllib.parse import parse_qsl, urlsplit

import pytest

from ehr.indexing import date_range, normalize_string
from ehr.models import (
    DateIndex,
    NumberIndex,
    QuantityIndex,
    ReferenceIndex,
    Resource,
    StringIndex,
    TokenIndex,
    UriIndex,
)
from ehr.search import SearchError, parse_search, run_search, searchset_bundle

pytestmark = pytest.mark.django_db
UTC = timezone.utc
BASE = "https://ehr.example/fhir"
LOINC = "http://loinc.org"


def store(resource_type, logical_id, *, text=None, body=None, deleted=False, updated="2024-01-01",
          strings=(), tokens=(), dates=(), refs=(), quantities=(), numbers=(), uris=()):
    """A stored resource with exactly the index rows given (what ehr.indexing would write)."""
    if text is None:
        text = json.dumps({"resourceType": resource_type, "id": logical_id,
                           "meta": {"versionId": "1"}, **(body or {})})
    resource = Resource.objects.create(
        resource_type=resource_type, logical_id=logical_id, version_id=1, deleted=deleted,
        last_updated=date_range(updated)[0], text="" if deleted else text)
    common = {"resource": resource, "resource_type": resource_type}
    for param, value in strings:
        StringIndex.objects.create(**common, param=param, value=normalize_string(value), exact=value)
    for param, system, code, *display in tokens:
        TokenIndex.objects.create(**common, param=param, system=system, code=code,
                                  text=normalize_string(display[0]) if display else None)
    for param, low, high in dates:
        DateIndex.objects.create(**common, param=param, low=low and date_range(low)[0],
                                 high=high and date_range(high)[1])
    for param, reference in refs:
        if "://" in reference:
            ReferenceIndex.objects.create(**common, param=param, url=reference)
        else:
            target_type, target_id = reference.split("/")
            ReferenceIndex.objects.create(**common, param=param, target_type=target_type,
                                          target_id=target_id)
    for param, value, system, code, unit in quantities:
        QuantityIndex.objects.create(**common, param=param, value=value, system=system, code=code,
                                     unit=unit)
    for param, value in numbers:
        NumberIndex.objects.create(**common, param=param, value=value)
    for param, value in uris:
        UriIndex.objects.create(**common, param=param, value=value)
    return resource


def search(resource_type, *params, strict=False):
    return run_search(parse_search(resource_type, list(params), strict=strict))


def ids(resource_type, *params, strict=False):
    return sorted(r.logical_id for r in search(resource_type, *params, strict=strict).matches)


def bundle(resource_type, *params, strict=False) -> dict:
    query = parse_search(resource_type, list(params), strict=strict)
    text = searchset_bundle(run_search(query), base_url=BASE, resource_type=resource_type, query=query)
    return json.loads(text)


def patient(logical_id, family=None, given=None, birthdate=None, **extra):
    strings = [("family", family), ("name", family)] if family else []
    strings += [("given", given), ("name", given)] if given else []
    dates = [("birthdate", birthdate, birthdate)] if birthdate else []
    return store("Patient", logical_id, strings=strings, dates=dates, **extra)


# --- date ----------------------------------------------------------------------------------


@pytest.fixture
def birthdays():
    patient("day", birthdate="1970-03-15")
    patient("year", birthdate="1970")
    patient("later", birthdate="1971-01-01")
    patient("earlier", birthdate="1969-12-31")
    patient("unknown")


@pytest.mark.parametrize(("value", "expected"), [
    ("1970", ["day", "year"]),
    ("1970-03", ["day"]),
    ("1970-03-15", ["day"]),
    ("eq1970-03-16", []),
    ("ne1970", ["earlier", "later"]),
    ("gt1970", ["later"]),
    ("ge1970", ["day", "later", "year"]),
    ("ge1970-03", ["day", "later", "year"]),
    ("lt1970", ["earlier"]),
    ("le1970-03", ["day", "earlier", "year"]),
    ("sa1970", ["later"]),
    ("eb1970", ["earlier"]),
    ("sa1970-03", ["later"]),
])
def test_birthdate_precision_and_prefixes(birthdays, value, expected):
    assert ids("Patient", ("birthdate", value)) == expected


def test_date_missing(birthdays):
    assert ids("Patient", ("birthdate:missing", "true")) == ["unknown"]
    assert ids("Patient", ("birthdate:missing", "false")) == ["day", "earlier", "later", "year"]


def test_date_approximately_widens_by_a_tenth_of_the_distance_to_now(birthdays):
    # 1970-03-15 is ~55 years ago: +-5.5 years covers every birthday here.
    assert ids("Patient", ("birthdate", "ap1970-03-15")) == ["day", "earlier", "later", "year"]
    assert ids("Patient", ("birthdate", "ap1900")) == []


@pytest.fixture
def periods():
    store("Encounter", "january", dates=[("date", "2020-01-01", "2020-01-31")])
    store("Encounter", "ongoing", dates=[("date", "2020-01-15", None)])
    store("Encounter", "until", dates=[("date", None, "2019-06-30")])


@pytest.mark.parametrize(("value", "expected"), [
    ("2020-01", ["january"]),
    ("2020", ["january"]),
    ("sa2019-12-31", ["january", "ongoing"]),
    ("eb2020-02", ["january", "until"]),
    ("ge2020-02-01", ["ongoing"]),
    ("gt2020-01-20", ["january", "ongoing"]),
    ("le2020-01-10", ["january", "until"]),
    ("lt2019", ["until"]),
    ("ne2020-01", ["ongoing", "until"]),
])
def test_periods_with_open_ends(periods, value, expected):
    assert ids("Encounter", ("date", value)) == expected


def test_last_updated():
    store("Patient", "old", updated="2019-05-01T10:00:00Z")
    store("Patient", "new", updated="2024-05-01T10:00:00Z")
    assert ids("Patient", ("_lastUpdated", "gt2020")) == ["new"]
    assert ids("Patient", ("_lastUpdated", "le2019-05")) == ["old"]
    assert ids("Patient", ("_lastUpdated", "2019-05-01T10:00:00Z")) == ["old"]
    assert ids("Patient", ("_lastUpdated", "ge2019,lt2000")) == ["new", "old"]


# --- string --------------------------------------------------------------------------------


@pytest.fixture
def names():
    patient("zoe", family="Smith", given="Zoë")
    patient("smithers", family="SMITHERS", given="Eve")
    patient("jones", family="Jones-Smith", given="Zoe")


@pytest.mark.parametrize(("params", "expected"), [
    ([("family", "smi")], ["smithers", "zoe"]),
    ([("family:contains", "SMI")], ["jones", "smithers", "zoe"]),
    ([("family:exact", "Smith")], ["zoe"]),
    ([("family:exact", "smith")], []),
    ([("given", "zoe")], ["jones", "zoe"]),
    ([("given", "ZOË")], ["jones", "zoe"]),
    ([("given:exact", "Zoe")], ["jones"]),
    ([("given:exact", "Zoë")], ["zoe"]),
    ([("family", "smith,jones")], ["jones", "smithers", "zoe"]),
    ([("family", "smi"), ("given", "zoe")], ["zoe"]),
    ([("family", "smi"), ("given", "eve,zoe")], ["smithers", "zoe"]),
    ([("family", "nobody")], []),
])
def test_string_matching(names, params, expected):
    assert ids("Patient", *params) == expected


# --- token ---------------------------------------------------------------------------------


@pytest.fixture
def codes():
    store("Observation", "loinc", tokens=[("code", LOINC, "1234-5", "Glucose [Mass/volume] in Blood")])
    store("Observation", "snomed", tokens=[("code", "http://snomed.info/sct", "1234-5")])
    store("Observation", "nosystem", tokens=[("code", None, "1234-5")])
    store("Observation", "other", tokens=[("code", LOINC, "999")])
    store("Observation", "uncoded")
    store("Observation", "gone", deleted=True, tokens=[("code", LOINC, "1234-5")])


@pytest.mark.parametrize(("value", "expected"), [
    ("code=1234-5", ["loinc", "nosystem", "snomed"]),
    ("code=|1234-5", ["nosystem"]),
    ("code=http://loinc.org|1234-5", ["loinc"]),
    ("code=http://loinc.org|", ["loinc", "other"]),
    ("code=http://loinc.org|1234-5,|1234-5", ["loinc", "nosystem"]),
    ("code=1234-6", []),
    ("code:not=http://loinc.org|1234-5", ["nosystem", "other", "snomed", "uncoded"]),
    ("code:not=1234-5", ["other", "uncoded"]),
    ("code:text=GLUC", ["loinc"]),
    ("code:text=blood", []),
    ("code:missing=true", ["uncoded"]),
    ("code:missing=false", ["loinc", "nosystem", "other", "snomed"]),
])
def test_token_matching(codes, value, expected):
    name, text = value.split("=", 1)
    assert ids("Observation", (name, text)) == expected


def test_id_search(codes):
    assert ids("Observation", ("_id", "loinc,other,gone,missing")) == ["loinc", "other"]
    assert ids("Observation", ("_id:not", "loinc")) == ["nosystem", "other", "snomed", "uncoded"]


# --- reference and chaining ----------------------------------------------------------------


@pytest.fixture
def subjects():
    store("Patient", "p1", strings=[("name", "Smith")], tokens=[("identifier", "http://mrn", "42")],
          refs=[("general-practitioner", "Practitioner/dr1")])
    store("Patient", "p2", strings=[("name", "Jones")], tokens=[("identifier", "http://mrn", "43")])
    store("Patient", "p3", deleted=True, strings=[("name", "Smith")])
    store("Group", "p1", strings=[("name", "Smith")])
    store("Practitioner", "dr1", strings=[("name", "House")])
    store("Observation", "o1", refs=[("subject", "Patient/p1"), ("patient", "Patient/p1")])
    store("Observation", "o2", refs=[("subject", "Patient/p2"), ("patient", "Patient/p2")])
    store("Observation", "o3", refs=[("subject", "Group/p1")])
    store("Observation", "o4", refs=[("subject", "http://other.org/fhir/Patient/p1")])
    store("Observation", "o5", refs=[("subject", "Patient/p3"), ("patient", "Patient/p3")])
    store("Provenance", "prov1", refs=[("target", "Observation/o1")])
    store("Provenance", "prov-gone", deleted=True, refs=[("target", "Observation/o1")])


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("subject", "Patient/p1", ["o1"]),
    ("subject", "Patient/p1/_history/3", ["o1"]),
    ("subject", "p1", ["o1", "o3"]),
    ("subject:Patient", "p1", ["o1"]),
    ("subject:Group", "p1", ["o3"]),
    ("subject", "http://other.org/fhir/Patient/p1", ["o4"]),
    ("subject", "Patient/p1,Patient/p2", ["o1", "o2"]),
    ("patient", "p1", ["o1"]),
    ("subject:missing", "true", []),
    ("patient:missing", "true", ["o3", "o4"]),
    ("patient.name", "smi", ["o1"]),  # p3 is deleted
    ("subject.name", "smi", ["o1"]),  # Patient and Location have "name", Group has not
    ("subject:Patient.name", "smi", ["o1"]),
    ("subject:Patient.identifier", "http://mrn|43", ["o2"]),
    ("patient.identifier", "42,43", ["o1", "o2"]),
    ("patient.identifier", "http://other|42", []),
])
def test_reference_forms_and_chains(subjects, name, value, expected):
    assert ids("Observation", (name, value)) == expected


def test_include_and_iterate(subjects):
    result = search("Observation", ("_id", "o1"), ("_include", "Observation:subject"))
    assert [(r.resource_type, r.logical_id) for r in result.included] == [("Patient", "p1")]
    result = search("Observation", ("_id", "o1"), ("_include", "Observation:subject"),
                    ("_include:iterate", "Patient:general-practitioner"))
    assert [(r.resource_type, r.logical_id) for r in result.included] == [
        ("Patient", "p1"), ("Practitioner", "dr1")]


def test_include_with_target_type_and_wildcard(subjects):
    both = search("Observation", ("_id", "o1,o3"), ("_include", "Observation:subject:Group"))
    assert [(r.resource_type, r.logical_id) for r in both.included] == [("Group", "p1")]
    wildcard = search("Observation", ("_id", "o1,o3"), ("_include", "*"))
    assert sorted((r.resource_type, r.logical_id) for r in wildcard.included) == [
        ("Group", "p1"), ("Patient", "p1")]


def test_include_skips_deleted_targets(subjects):
    result = search("Observation", ("_id", "o5"), ("_include", "Observation:patient"))
    assert result.included == []


def test_revinclude(subjects):
    result = search("Observation", ("_id", "o1,o2"), ("_revinclude", "Provenance:target"))
    assert [r.logical_id for r in result.included] == ["prov1"]
    patients = search("Patient", ("_id", "p1"), ("_revinclude", "Observation:subject"))
    assert [r.logical_id for r in patients.included] == ["o1"]  # not Group/p1's o3


def test_includes_cost_one_query_per_level(subjects, django_assert_num_queries):
    query = parse_search("Observation", [("_id", "o1"), ("_include", "Observation:subject"),
                                         ("_include:iterate", "Patient:general-practitioner"),
                                         ("_revinclude", "Provenance:target")], strict=False)
    with django_assert_num_queries(3):  # page (total known from it), two include levels
        result = run_search(query)
    assert result.total == 1
    assert sorted(r.logical_id for r in result.included) == ["dr1", "p1", "prov1"]


def test_include_entries_in_the_bundle(subjects):
    entries = bundle("Observation", ("_id", "o1"), ("_include", "Observation:subject"))["entry"]
    assert [(e["fullUrl"], e["search"]["mode"]) for e in entries] == [
        (f"{BASE}/Observation/o1", "match"), (f"{BASE}/Patient/p1", "include")]


# --- quantity, number, uri -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "matches"), [
    ("5.4", True), ("5.40", True), ("5.5", False), ("5", True), ("gt5|http://unitsofmeasure.org|mg", True),
    ("5.4||mg", True), ("5.4||milligram", True), ("5.4|http://other|mg", False), ("lt5", False),
    ("ap5", True), ("ne5.4", False), ("ge5.4", True), ("le5.39", False),
])
def test_quantity(value, matches):
    store("Observation", "q", quantities=[("value-quantity", "5.4", "http://unitsofmeasure.org", "mg",
                                           "milligram")])
    assert ids("Observation", ("value-quantity", value)) == (["q"] if matches else [])


@pytest.mark.parametrize(("value", "matches"), [
    ("0.8", True), ("0.80", True), ("1", True), ("1.0", False), ("gt0.79", True), ("lt0.8", False),
    ("le0.8", True), ("ne0.8", False), ("ap0.75", True), ("ap0.5", False),
])
def test_number_implicit_precision(value, matches):
    store("RiskAssessment", "r", numbers=[("probability", "0.8")])
    assert ids("RiskAssessment", ("probability", value)) == (["r"] if matches else [])


@pytest.mark.parametrize(("value", "matches"), [
    ("url=http://a.org/fhir/ValueSet/x", True),
    ("url=http://a.org/fhir/ValueSet", False),
    ("url:below=http://a.org/fhir", True),
    ("url:below=http://b.org", False),
    ("url:above=http://a.org/fhir/ValueSet/x/y/z", True),
    ("url:above=http://a.org/fhir/CodeSystem/x", False),
])
def test_uri(value, matches):
    store("ValueSet", "vs", uris=[("url", "http://a.org/fhir/ValueSet/x")])
    name, text = value.split("=", 1)
    assert ids("ValueSet", (name, text)) == (["vs"] if matches else [])


# --- system search, deleted ----------------------------------------------------------------


def test_system_search_spans_types(codes, names):
    assert sorted(r.logical_id for r in search(None, ("_id", "loinc,zoe,gone")).matches) == [
        "loinc", "zoe"]
    only_patients = search(None, ("_id", "loinc,zoe"), ("_type", "Patient")).matches
    assert [r.logical_id for r in only_patients] == ["zoe"]


def test_unknown_type_is_an_error():
    with pytest.raises(SearchError):
        search("Bogus")


# --- sorting and paging --------------------------------------------------------------------


@pytest.fixture
def five():
    patient("a", family="Beta", birthdate="1980")
    patient("b", family="Alpha", birthdate="1990")
    patient("c", family="Beta", birthdate="1970")
    patient("d", family="Alpha", birthdate="1985")
    patient("e", birthdate="1960")


def sorted_ids(*params):
    return [r.logical_id for r in search("Patient", *params).matches]


def test_sort_multi_key(five):
    assert sorted_ids(("_sort", "family,-birthdate")) == ["b", "d", "a", "c", "e"]
    assert sorted_ids(("_sort", "-family,birthdate")) == ["c", "a", "d", "b", "e"]
    assert sorted_ids(("_sort", "birthdate")) == ["e", "c", "a", "d", "b"]
    assert sorted_ids(("_sort", "-_id")) == ["e", "d", "c", "b", "a"]


def test_sort_ties_break_on_storage_order(five):
    assert sorted_ids(("_sort", "family")) == ["b", "d", "a", "c", "e"]
    assert sorted_ids(("_sort", "-family")) == ["a", "c", "b", "d", "e"]


def test_sort_by_the_lowest_or_highest_value_of_several():
    store("Encounter", "long", dates=[("date", "2001", "2001"), ("date", "2010", "2010")])
    store("Encounter", "mid", dates=[("date", "2005", "2005")])
    assert [r.logical_id for r in search("Encounter", ("_sort", "date")).matches] == ["long", "mid"]
    assert [r.logical_id for r in search("Encounter", ("_sort", "-date")).matches] == ["long", "mid"]


def link(document, relation):
    found = [item["url"] for item in document["link"] if item["relation"] == relation]
    return found[0] if found else None


def follow(url):
    parts = urlsplit(url)
    assert parts.path == "/fhir/Patient"
    return bundle("Patient", *parse_qsl(parts.query))


def test_paging_links_are_stable_and_complete(five):
    first = bundle("Patient", ("_sort", "birthdate"), ("_count", "2"), ("bogus", "1"))
    assert link(first, "self") == f"{BASE}/Patient?_sort=birthdate&_count=2"
    assert link(first, "first") == f"{BASE}/Patient?_sort=birthdate&_count=2"
    assert link(first, "next") == f"{BASE}/Patient?_sort=birthdate&_count=2&_offset=2"
    assert link(first, "previous") is None
    assert first["total"] == 5
    assert [e["resource"]["id"] for e in first["entry"] if e["search"]["mode"] == "match"] == ["e", "c"]
    second = follow(link(first, "next"))
    assert [e["resource"]["id"] for e in second["entry"]] == ["a", "d"]
    assert link(second, "previous") == f"{BASE}/Patient?_sort=birthdate&_count=2"
    third = follow(link(second, "next"))
    assert [e["resource"]["id"] for e in third["entry"]] == ["b"]
    assert link(third, "next") is None
    assert link(third, "self") == f"{BASE}/Patient?_sort=birthdate&_count=2&_offset=4"
    assert third["total"] == 5


def test_offset_past_the_end(five):
    result = search("Patient", ("_offset", "10"))
    assert (result.matches, result.total, result.has_next) == ([], 5, False)


def test_default_count_and_query_count(five, django_assert_num_queries):
    query = parse_search("Patient", [("_count", "2")], strict=False)
    with django_assert_num_queries(2):  # the page and the count
        result = run_search(query)
    assert (len(result.matches), result.total, result.has_next, result.count) == (2, 5, True, 2)


def test_total_none_and_estimate(five):
    assert search("Patient", ("_total", "none"), ("_count", "2")).total is None
    assert "total" not in bundle("Patient", ("_total", "none"))
    assert isinstance(search("Patient", ("_total", "estimate"), ("_count", "2")).total, int)


def test_summary_count(five):
    document = bundle("Patient", ("_summary", "count"), ("family", "alpha"))
    assert document["total"] == 2
    assert "entry" not in document
    assert link(document, "self") == f"{BASE}/Patient?_summary=count&family=alpha&_count=0"


# --- bundle content ------------------------------------------------------------------------

RAW = ('{ "resourceType" : "Patient", "id":"raw", "meta":{"versionId":"1","tag":[{"code":"x"}]},'
       ' "text":{"status":"generated","div":"<div xmlns=\\"http://www.w3.org/1999/xhtml\\">x</div>"},'
       '"extension":[{"url":"http://e","valueDecimal":1.50}], "name":[{"family":"Ruiz"}],'
       '"birthDate":"1970","_birthDate":{"id":"b"},"contact":[{"name":{"family":"K"}}],"gender":"other"}')


def test_entries_are_the_stored_text_verbatim():
    store("Patient", "raw", text=RAW)
    text = searchset_bundle(search("Patient"), base_url=BASE, resource_type="Patient",
                            query=parse_search("Patient", [], strict=False))
    assert f'"resource":{RAW},"search":{{"mode":"match"}}' in text
    assert json.loads(text)["entry"][0]["fullUrl"] == f"{BASE}/Patient/raw"


def test_elements_keeps_the_named_members_and_marks_subsetted():
    store("Patient", "raw", text=RAW)
    (entry,) = bundle("Patient", ("_elements", "name,birthDate"))["entry"]
    resource = entry["resource"]
    assert list(resource) == ["resourceType", "id", "meta", "name", "birthDate", "_birthDate"]
    assert resource["meta"]["tag"] == [
        {"code": "x"}, {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
                        "code": "SUBSETTED"}]


def test_summary_true_drops_non_summary_members():
    store("Patient", "raw", text=RAW)
    (entry,) = bundle("Patient", ("_summary", "true"))["entry"]
    assert list(entry["resource"]) == ["resourceType", "id", "meta", "name", "birthDate",
                                       "_birthDate", "gender"]


def test_summary_text_and_data():
    store("Patient", "raw", text=RAW)
    (text_entry,) = bundle("Patient", ("_summary", "text"))["entry"]
    assert list(text_entry["resource"]) == ["resourceType", "id", "meta", "text"]
    (data,) = bundle("Patient", ("_summary", "data"))["entry"]
    assert "text" not in data["resource"]
    assert data["resource"]["extension"] == [{"url": "http://e", "valueDecimal": 1.5}]


# --- warnings ------------------------------------------------------------------------------


def test_unknown_parameter_warning_is_an_outcome_entry(names):
    document = bundle("Patient", ("family", "smith"), ("bogus", "1"))
    outcome = document["entry"][0]
    assert outcome["search"] == {"mode": "outcome"}
    assert outcome["resource"]["issue"] == [{
        "severity": "warning", "code": "not-supported",
        "diagnostics": "unknown search parameter 'bogus' for Patient (ignored)"}]
    assert [e["resource"]["id"] for e in document["entry"][1:]] == ["zoe", "smithers"]
    assert link(document, "self") == f"{BASE}/Patient?family=smith&_count=20"


def test_unknown_parameter_strict_is_an_error_and_no_search_runs(names, django_assert_num_queries):
    with django_assert_num_queries(0), pytest.raises(SearchError) as caught:
        search("Patient", ("family", "smith"), ("bogus", "1"), strict=True)
    assert caught.value.code == "not-supported"


# --- end to end through resource_create (the real indexer) ---------------------------------


def create(resource: dict) -> str:
    from ehr.services import resource_create

    outcome = resource_create(resource_type=resource["resourceType"], text=json.dumps(resource))
    return outcome.resource.logical_id


def test_end_to_end_with_the_real_indexer():
    zoe = create({"resourceType": "Patient", "name": [{"family": "Smith", "given": ["Zoë"]}],
                  "birthDate": "1970-03-15", "identifier": [{"system": "http://mrn", "value": "42"}]})
    other = create({"resourceType": "Patient", "name": [{"family": "Jones"}], "birthDate": "1970"})
    glucose = create({
        "resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{zoe}"},
        "code": {"coding": [{"system": LOINC, "code": "2339-0", "display": "Glucose"}]},
        "effectiveDateTime": "2021-06-01T08:30:00Z",
        "valueQuantity": {"value": 5.4, "system": "http://unitsofmeasure.org", "code": "mmol/L"}})
    create({"resourceType": "Observation", "status": "final", "subject": {"reference": f"Patient/{other}"},
            "code": {"coding": [{"system": LOINC, "code": "2339-0"}]}, "effectiveDateTime": "2019-01-01"})
    assert ids("Patient", ("name", "zoe"), ("birthdate", "1970")) == [zoe]
    assert ids("Patient", ("birthdate", "1970-03")) == [zoe]
    assert ids("Observation", ("patient", zoe), ("code", f"{LOINC}|2339-0"),
               ("date", "ge2020-01-01")) == [glucose]
    assert ids("Observation", ("patient.identifier", "http://mrn|42")) == [glucose]
    assert ids("Observation", ("code:text", "gluc")) == [glucose]
    assert ids("Observation", ("value-quantity", "5.4|http://unitsofmeasure.org|mmol/L")) == [glucose]
    included = search("Observation", ("_id", glucose), ("_include", "Observation:subject")).included
    assert [r.logical_id for r in included] == [zoe]
