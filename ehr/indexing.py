"""Search-index values of a resource, per the FHIR R4 search rules (hl7.org/fhir/R4/search.html).

Every write rewrites the index rows of the resource, so this runs on each create, update
and transaction entry: it follows the branches compiled once per resource type by
``ehr.searchparams`` (plain dict look-ups, no FHIRPath evaluation per resource, except the
one or two expressions outside the compiled subset) and turns what it finds into typed
rows, one list per index table. ``normalize_string`` and ``date_range`` are shared with
the search code so a query value is read exactly the way the indexed value was.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache, lru_cache

from . import searchparams
from .fhir import ID, RELATIVE_REFERENCE, TYPE
from .numeric import index_decimal
from .searchparams import Branch, Plan

CURRENCY_SYSTEM = "urn:iso:std:iso:4217"  # Money.currency is an ISO 4217 code


@dataclass(frozen=True, slots=True)
class StringValue:
    param: str
    value: str  # normalize_string(exact): what searches compare
    exact: str  # as written, for :exact


@dataclass(frozen=True, slots=True)
class TokenValue:
    param: str
    system: str | None
    code: str | None
    # normalize_string(Coding.display, CodeableConcept.text or Identifier.type.text), for :text
    text: str | None


@dataclass(frozen=True, slots=True)
class DateValue:
    param: str
    low: datetime | None  # aware UTC, inclusive; None = open (a Period without start)
    high: datetime | None  # aware UTC, inclusive; None = open (a Period without end)


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    param: str
    target_type: str | None
    target_id: str | None
    url: str | None  # absolute or canonical reference as written; None for "Type/id"


@dataclass(frozen=True, slots=True)
class QuantityValue:
    param: str
    value: Decimal
    system: str | None
    code: str | None
    unit: str | None


@dataclass(frozen=True, slots=True)
class NumberValue:
    param: str
    value: Decimal


@dataclass(frozen=True, slots=True)
class UriValue:
    param: str
    value: str


@dataclass(slots=True)
class IndexValues:
    """The rows of one resource, one list per index table, without duplicates."""

    strings: list[StringValue] = field(default_factory=list)
    tokens: list[TokenValue] = field(default_factory=list)
    dates: list[DateValue] = field(default_factory=list)
    references: list[ReferenceValue] = field(default_factory=list)
    quantities: list[QuantityValue] = field(default_factory=list)
    numbers: list[NumberValue] = field(default_factory=list)
    uris: list[UriValue] = field(default_factory=list)


def extract_index_values(resource: dict) -> IndexValues:
    """The index rows of a resource (from ``json.loads(text, parse_float=Decimal)``)."""
    out = IndexValues()
    for extractor in _extractors(resource.get("resourceType", "")):
        extractor(resource, out)
    _bound_texts(out)
    for name in _LIST_NAMES:
        values = getattr(out, name)
        if len(values) > 1:
            setattr(out, name, list(dict.fromkeys(values)))
    return out


_LIST_NAMES = tuple(f.name for f in fields(IndexValues))

# A btree index entry holds at most 2,704 bytes: a longer indexed text fails the whole write
# (formerly a 500). Indexed columns keep a prefix (4 bytes a character at worst; token code
# and system share one entry); :exact and :text compare unindexed columns, kept whole. The
# search code cuts query values the same way (``ehr.search.values``).
STRING_INDEX_CHARS = 600
TOKEN_INDEX_CHARS = 300
URI_INDEX_CHARS = 600


def _cut(text: str | None, limit: int) -> str | None:
    return text[:limit] if text is not None and len(text) > limit else text


def _bound_texts(out: IndexValues) -> None:
    """Indexed texts cut to what a btree entry holds; a no-op for nearly every resource."""
    out.strings = [v if len(v.value) <= STRING_INDEX_CHARS else
                   StringValue(v.param, v.value[:STRING_INDEX_CHARS], v.exact) for v in out.strings]
    out.tokens = [v if len(v.code or "") <= TOKEN_INDEX_CHARS and len(v.system or "") <= TOKEN_INDEX_CHARS else
                  TokenValue(v.param, _cut(v.system, TOKEN_INDEX_CHARS), _cut(v.code, TOKEN_INDEX_CHARS), v.text)
                  for v in out.tokens]
    out.uris = [v if len(v.value) <= URI_INDEX_CHARS else UriValue(v.param, v.value[:URI_INDEX_CHARS])
                for v in out.uris]
Extractor = Callable[[dict, IndexValues], None]


@cache
def _extractors(resource_type: str) -> tuple[Extractor, ...]:
    """One closure per compiled branch (or fhirpathpy fallback) of the type's parameters."""
    extractors: list[Extractor] = []
    for plan in searchparams.plans(resource_type).values():
        if plan.fallback:
            extractors.append(_fallback_extractor(plan))
        for branch in plan.branches:
            extractors.append(_branch_extractor(plan.param.code, branch, plan.param.type))
    return tuple(extractors)


def _branch_extractor(param: str, branch: Branch, param_type: str) -> Extractor:
    convert = CONVERTERS[param_type][branch.fhir_type]
    first, rest, target = branch.ops[0][1], branch.ops[1:], branch.target

    def extract(resource: dict, out: IndexValues) -> None:
        start = resource.get(first)
        if start is None:  # most parameters are absent from most resources: stop early
            return
        for node in _walk(start if type(start) is list else [start], rest):
            convert(out, param, node, target)

    return extract


def _walk(nodes: list, ops: tuple[tuple, ...]) -> list:
    """Apply the remaining ``get`` / ``eq`` / ``index`` operations of a branch."""
    for op in ops:
        kind = op[0]
        if kind == "get":
            key, found = op[1], []
            for node in nodes:
                value = node.get(key) if type(node) is dict else None
                if type(value) is list:
                    found.extend(value)
                elif value is not None:
                    found.append(value)
            nodes = found
        elif kind == "eq":
            nodes = [n for n in nodes if type(n) is dict and n.get(op[1]) == op[2]]
        else:
            nodes = nodes[op[1]:op[1] + 1]
        if not nodes:
            break
    return nodes


def _fallback_extractor(plan: Plan) -> Extractor:
    """fhirpathpy for the expressions the compiler leaves out (slower, primitive results only)."""
    from fhirpathpy import compile as fhirpath_compile
    from fhirpathpy.models import models

    evaluate = fhirpath_compile(plan.fallback, models["r4"])
    param, param_type = plan.param.code, plan.param.type

    def extract(resource: dict, out: IndexValues) -> None:
        for value in evaluate(resource):
            _add_primitive(out, param, param_type, value)

    return extract


def _add_primitive(out: IndexValues, param: str, param_type: str, value) -> None:
    if type(value) is bool:
        value = "true" if value else "false"
    if param_type == "number" and isinstance(value, int | Decimal):
        number = _decimal(value)
        if number is not None:
            out.numbers.append(NumberValue(param, number))
    elif not isinstance(value, str):
        return
    elif param_type == "token":
        out.tokens.append(TokenValue(param, None, value, None))
    elif param_type == "string":
        _add_string(out, param, value)
    elif param_type == "uri":
        out.uris.append(UriValue(param, value))


# ---------------------------------------------------------------------------------------------
# Strings


CACHED_CHARS = 256  # longer texts are not cached: 65,536 cached 1 MB strings would be 64 GB


def normalize_string(text: str) -> str:
    """Case-folded, accents removed, whitespace collapsed: "  José  DE la Cruz" → "jose de la cruz".

    FHIR string search is case- and accent-insensitive and matches a prefix; the search code
    normalizes the query the same way and compares with ``LIKE 'query%'``.
    """
    return _normalize_cached(text) if len(text) <= CACHED_CHARS else _normalize(text)


@lru_cache(maxsize=65536)
def _normalize_cached(text: str) -> str:
    return _normalize(text)


def _normalize(text: str) -> str:
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.split())


def _add_string(out: IndexValues, param: str, text) -> None:
    if type(text) is str and text:
        out.strings.append(StringValue(param, normalize_string(text), text))


def _string(out: IndexValues, param: str, node, target: str | None) -> None:
    _add_string(out, param, node)


_HUMAN_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _parts(parts: tuple[str, ...]) -> Callable:
    def convert(out: IndexValues, param: str, node, target: str | None) -> None:
        if type(node) is not dict:
            return
        for part in parts:
            value = node.get(part)
            for text in value if type(value) is list else (value,):
                _add_string(out, param, text)

    return convert


# ---------------------------------------------------------------------------------------------
# Tokens


def _text(value) -> str | None:
    """Texts are matched like strings by :text (case- and accent-insensitive prefix)."""
    return normalize_string(value) or None if type(value) is str else None


def _coding(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is dict and (node.get("code") or node.get("system") or node.get("display")):
        out.tokens.append(
            TokenValue(param, node.get("system"), node.get("code"), _text(node.get("display"))))


def _codeable_concept(out: IndexValues, param: str, node, target: str | None) -> None:
    """One row per coding (display as text), plus a code-less row for the concept's text."""
    if type(node) is not dict:
        return
    for coding in node.get("coding", ()):
        _coding(out, param, coding, target)
    text = _text(node.get("text"))
    if text:
        out.tokens.append(TokenValue(param, None, None, text))


def _identifier(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is not dict or not (node.get("value") or node.get("system")):
        return
    kind = node.get("type")
    text = _text(kind.get("text")) if type(kind) is dict else None
    out.tokens.append(TokenValue(param, node.get("system"), node.get("value"), text))


def _contact_point(out: IndexValues, param: str, node, target: str | None) -> None:
    """The spec leaves a ContactPoint's token system undefined: the code is the value."""
    if type(node) is dict and node.get("value"):
        out.tokens.append(TokenValue(param, None, node["value"], None))


def _token_primitive(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is str and node:
        out.tokens.append(TokenValue(param, None, node, None))


def _token_boolean(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is bool:
        out.tokens.append(TokenValue(param, None, "true" if node else "false", None))


# ---------------------------------------------------------------------------------------------
# Dates

_DATE = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)


def date_range(value: str) -> tuple[datetime, datetime]:
    """The inclusive UTC range a FHIR date/dateTime/instant covers, by its precision.

    "2020" → 2020-01-01T00:00:00Z .. 2020-12-31T23:59:59.999999Z; "2020-03-04T10:00+02:00" →
    08:00:00Z .. 08:00:59.999999Z. Values without a timezone (dates, and the minute
    precision search allows) are taken as UTC. ValueError when it is not such a value.
    """
    if type(value) is str and len(value) <= CACHED_CHARS:
        return _date_range_cached(value)
    return _date_range(value)


@lru_cache(maxsize=65536)
def _date_range_cached(value: str) -> tuple[datetime, datetime]:
    return _date_range(value)


def _date_range(value) -> tuple[datetime, datetime]:
    match = _DATE.fullmatch(value) if type(value) is str else None
    if match is None:
        raise ValueError(f"not a FHIR date, dateTime or instant: {str(value)[:40]!r}")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        low, high = _local_range(year, month, day, hour, minute, second, fraction)
        offset = _offset(zone)
        if offset:
            low, high = low - offset, high - offset
        return low, high
    except (ValueError, OverflowError):
        raise ValueError(f"not a valid date: {value[:40]!r}") from None


def _local_range(year, month, day, hour, minute, second, fraction) -> tuple[datetime, datetime]:
    y = int(year)
    if month is None:
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    m = int(month)
    if day is None:
        last = calendar.monthrange(y, m)[1] if 1 <= m <= 12 else 0
        return (datetime(y, m, 1, tzinfo=UTC),
                datetime(y, m, last, 23, 59, 59, 999999, tzinfo=UTC))
    d = int(day)
    if hour is None:
        return datetime(y, m, d, tzinfo=UTC), datetime(y, m, d, 23, 59, 59, 999999, tzinfo=UTC)
    low = datetime(y, m, d, int(hour), int(minute), int(second or 0), tzinfo=UTC)
    if second is None:
        return low, low + timedelta(seconds=59, microseconds=999999)
    if fraction is None:
        return low, low + timedelta(microseconds=999999)
    low = low.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return low, low + timedelta(microseconds=10 ** max(0, 6 - len(fraction)) - 1)


def _offset(zone: str | None) -> timedelta | None:
    if zone is None or zone == "Z":
        return None
    sign = -1 if zone[0] == "-" else 1
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 14 or minutes > 59:
        raise ValueError(zone)
    return sign * timedelta(hours=hours, minutes=minutes)


def _date(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is not str:
        return
    try:
        low, high = date_range(node)
    except ValueError:
        return  # not reachable for validated resources; never fail a write over an index row
    out.dates.append(DateValue(param, low, high))


def _period(out: IndexValues, param: str, node, target: str | None) -> None:
    """A Period covers from its start's low to its end's high; a missing end is open."""
    if type(node) is not dict:
        return
    try:
        low = date_range(node["start"])[0] if "start" in node else None
        high = date_range(node["end"])[1] if "end" in node else None
    except ValueError:
        return
    if low is not None or high is not None:
        out.dates.append(DateValue(param, low, high))


def _timing(out: IndexValues, param: str, node, target: str | None) -> None:
    """Each event, and the repeat's boundsPeriod: the schedule itself is not searchable."""
    if type(node) is not dict:
        return
    for event in node.get("event", ()):
        _date(out, param, event, target)
    repeat = node.get("repeat")
    if type(repeat) is dict and "boundsPeriod" in repeat:
        _period(out, param, repeat["boundsPeriod"], target)


# ---------------------------------------------------------------------------------------------
# References

_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*:")  # not "Organization?identifier=..." (conditional)
_ABSOLUTE = re.compile(rf"https?://\S+?/({TYPE})/({ID})(?:/_history/{ID})?")


def _reference(out: IndexValues, param: str, node, target: str | None) -> None:
    """"Type/id" (version dropped), absolute URLs (type and id parsed too); no "#x", "urn:"."""
    reference = node.get("reference") if type(node) is dict else None
    if type(reference) is not str or reference.startswith(("#", "urn:")):
        return
    match = RELATIVE_REFERENCE.fullmatch(reference)
    if match:
        url = None
    else:
        match = _ABSOLUTE.fullmatch(reference)
        url = reference
    if match is None:
        if target is None and _SCHEME.match(reference):
            out.references.append(ReferenceValue(param, None, None, reference))
        return
    if target is None or match.group(1) == target:
        out.references.append(ReferenceValue(param, match.group(1), match.group(2), url))


def _canonical_reference(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is str and node and target is None:
        out.references.append(ReferenceValue(param, None, None, node))


def _resource_reference(out: IndexValues, param: str, node, target: str | None) -> None:
    """Bundle.entry[0].resource: the resource itself stands for a reference to it."""
    if type(node) is dict and node.get("resourceType") and node.get("id"):
        if target is None or node["resourceType"] == target:
            out.references.append(ReferenceValue(param, node["resourceType"], node["id"], None))


# ---------------------------------------------------------------------------------------------
# Quantities, numbers, URIs


def _decimal(value) -> Decimal | None:
    """The value as its index row holds it (``ehr.numeric``); None for what is not a finite number."""
    if type(value) is int:
        value = Decimal(value)
    elif type(value) is float:
        value = Decimal(str(value))
    if type(value) is not Decimal or not value.is_finite():
        return None
    return index_decimal(value)


def _quantity(out: IndexValues, param: str, node, target: str | None) -> None:
    value = _decimal(node.get("value")) if type(node) is dict else None
    if value is not None:
        out.quantities.append(
            QuantityValue(param, value, node.get("system"), node.get("code"), node.get("unit")))


def _money(out: IndexValues, param: str, node, target: str | None) -> None:
    value = _decimal(node.get("value")) if type(node) is dict else None
    if value is not None:
        currency = node.get("currency")
        system = CURRENCY_SYSTEM if currency else None
        out.quantities.append(QuantityValue(param, value, system, currency, None))


def _number(out: IndexValues, param: str, node, target: str | None) -> None:
    value = _decimal(node)
    if value is not None:
        out.numbers.append(NumberValue(param, value))


def _uri(out: IndexValues, param: str, node, target: str | None) -> None:
    if type(node) is str and node:
        out.uris.append(UriValue(param, node))


def _table(converter: Callable, types: Iterable[str]) -> dict[str, Callable]:
    return dict.fromkeys(types, converter)


# (search parameter type, FHIR type) → converter; its keys are searchparams.INDEXABLE_TYPES.
CONVERTERS: dict[str, dict[str, Callable]] = {
    "string": {
        **_table(_string, ("string", "markdown", "code", "id", "uri", "url", "canonical")),
        "HumanName": _parts(_HUMAN_NAME_PARTS),
        "Address": _parts(_ADDRESS_PARTS),
    },
    "token": {
        "Coding": _coding,
        "CodeableConcept": _codeable_concept,
        "Identifier": _identifier,
        "ContactPoint": _contact_point,
        "boolean": _token_boolean,
        **_table(_token_primitive, ("code", "string", "id", "uri", "url", "canonical", "oid",
                                    "uuid")),
    },
    "date": {**_table(_date, ("date", "dateTime", "instant")), "Period": _period,
             "Timing": _timing},
    "reference": {"Reference": _reference, "Resource": _resource_reference,
                  **_table(_canonical_reference, ("canonical", "uri", "url"))},
    "quantity": {**_table(_quantity, ("Quantity", "SimpleQuantity", "Age", "Duration",
                                      "Distance", "Count", "MoneyQuantity")),
                 "Money": _money},
    "number": _table(_number, ("integer", "decimal", "positiveInt", "unsignedInt")),
    "uri": _table(_uri, ("uri", "url", "canonical", "oid", "uuid")),
}
