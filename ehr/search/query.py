"""A search request parsed and validated against the parameter registry (no database).

``parse_search`` takes the parameters in request order and returns a ``SearchQuery``:
the filter criteria, the result parameters, the warnings for what was ignored, and the
normalized parameters actually applied (for an accurate ``self`` link).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from ehr import searchparams as registry

from .errors import SearchError
from .values import parse_values, split_escaped

DEFAULT_COUNT = 20
MAX_COUNT = 200
TOTAL_MODES = ("none", "estimate", "accurate")
SUMMARY_MODES = ("true", "false", "text", "data", "count")
SORTABLE = ("string", "token", "date", "number", "quantity", "reference", "uri")
IGNORED = ("_format", "_pretty")  # handled by the HTTP layer
MODIFIERS = {
    "string": ("exact", "contains", "missing"),
    "token": ("not", "text", "missing"),
    "date": ("missing",),
    "number": ("missing",),
    "quantity": ("missing",),
    "reference": ("missing",),
    "uri": ("below", "above", "missing"),
}
# Reverse chaining is refused, never ignored: ignoring it would answer as if it matched.
REFUSED_PARAMS = ("_has",)
UNSUPPORTED_PARAMS = ("_text", "_content", "_list", "_query", "_filter", "_contained",
                      "_containedType")
KNOWN_UNSUPPORTED = ("above", "below", "in", "not-in", "of-type", "identifier", "iterate")


@dataclass(frozen=True)
class Param:
    """The registry's SearchParam shape, for the common parameters of a system search."""

    code: str
    type: str
    expression: str = ""
    targets: tuple[str, ...] = ()
    url: str = ""


COMMON = {
    "_id": Param("_id", "token"),
    "_lastUpdated": Param("_lastUpdated", "date"),
    "_tag": Param("_tag", "token"),
    "_profile": Param("_profile", "uri"),
    "_security": Param("_security", "token"),
}


@dataclass(frozen=True)
class Criterion:
    """One parameter occurrence: its values are ORed; several criteria are ANDed."""

    resource_type: str | None  # whose index rows are searched; None: every type
    param: Any  # a registry SearchParam (or ``Param``)
    modifier: str | None
    values: tuple
    chain_types: tuple[str, ...] = ()  # a chained reference: the target types searched
    chain: Criterion | None = None  # ... and the criterion they must meet


@dataclass(frozen=True)
class SortKey:
    param: Any
    descending: bool


@dataclass(frozen=True)
class Include:
    """``_include`` (reverse=False) or ``_revinclude``: ``source_type:param[:target_type]``."""

    source_type: str | None  # None: any type (``*``)
    param: str | None  # None: every reference parameter
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass
class SearchQuery:
    resource_type: str | None
    criteria: list[Criterion] = field(default_factory=list)
    types: tuple[str, ...] = ()  # ``_type`` of a system search
    sort: list[SortKey] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: tuple[str, ...] = ()
    total: str = "accurate"
    warnings: list[str] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)  # for links, less _count/_offset


def parse_search(resource_type: str | None, params: list[tuple[str, str]], *, strict: bool) -> SearchQuery:
    """Parse and validate; unknown parameters are warnings, or errors when ``strict``."""
    if resource_type is not None and resource_type not in registry.resource_types():
        raise SearchError("not-supported", f"unknown resource type {resource_type!r}")
    _check_cost(params)
    query = SearchQuery(resource_type=resource_type)
    for name, value in params:
        if "\x00" in name or "\x00" in value:  # PostgreSQL text cannot hold NUL: never a match
            raise SearchError("invalid", f"search parameter {name!r} contains a NUL character")
        if name in IGNORED:
            continue
        if name.startswith("_") and name.split(":")[0] in RESULT_PARAMS:
            RESULT_PARAMS[name.split(":")[0]](query, name, value, strict)
            continue
        criterion = _criterion(query, name, value, strict)
        if criterion is not None:
            query.criteria.append(criterion)
            query.applied.append((name, value))
    if query.summary and query.elements:
        raise SearchError("invalid", "_summary and _elements cannot be used together")
    if query.summary == "count":
        query.count = 0
    return query


def _check_cost(params: list[tuple[str, str]]) -> None:
    """Refuse, before any parsing or SQL, searches whose cost grows with their length.

    Each criterion is a subquery and each chained one a subquery per target type (80 chains
    took 5.5 s); the caps are FHIR_SEARCH_MAX_PARAMS and FHIR_SEARCH_MAX_CHAINS.
    """
    counted = [name for name, _ in params if name not in IGNORED]
    if len(counted) > settings.FHIR_SEARCH_MAX_PARAMS:
        raise SearchError("too-costly", f"more than {settings.FHIR_SEARCH_MAX_PARAMS} search parameters")
    chains = sum(1 for name in counted if "." in name)
    if chains > settings.FHIR_SEARCH_MAX_CHAINS:
        raise SearchError("too-costly", f"more than {settings.FHIR_SEARCH_MAX_CHAINS} chained search parameters")


def _ignore(query: SearchQuery, message: str, strict: bool) -> None:
    if strict:
        raise SearchError("not-supported", message)
    query.warnings.append(message + " (ignored)")


def _params_of(resource_type: str | None) -> dict:
    if resource_type is None:
        return COMMON
    known = dict(COMMON)
    known.update(registry.search_params(resource_type))
    return known


def _supported(resource_type: str | None, code: str) -> bool:
    if resource_type is None or code in COMMON:
        return code in COMMON
    return code in registry.supported_search_params(resource_type)


def _lookup(query: SearchQuery, resource_type: str | None, code: str, strict: bool, name: str):
    """The parameter ``code`` of the type, or None (and a warning) when unknown."""
    param = _params_of(resource_type).get(code)
    if param is None:
        where = resource_type or "a system search"
        _ignore(query, f"unknown search parameter {name!r} for {where}", strict)
        return None
    if param.type not in MODIFIERS or not _supported(resource_type, code):
        _ignore(query, f"search parameter {name!r} is not supported", strict)
        return None
    return param


def _criterion(query: SearchQuery, name: str, value: str, strict: bool) -> Criterion | None:
    if name.split(":")[0].split(".")[0] in REFUSED_PARAMS:
        raise SearchError("not-supported", f"search parameter {name.split(':')[0]!r} is not supported")
    if name.split(":")[0].split(".")[0] in UNSUPPORTED_PARAMS:
        _ignore(query, f"search parameter {name!r} is not supported", strict)
        return None
    head, dot, chained = name.partition(".")
    code, _, modifier = head.partition(":")
    param = _lookup(query, query.resource_type, code, strict, name)
    if param is None:
        return None
    if dot:
        return _chained(query, param, modifier or None, chained, value, name, strict)
    modifier = _modifier(query.resource_type, param, modifier or None, name)
    if code == "_id" and modifier not in (None, "not"):
        raise SearchError("not-supported", f"{name}: modifier not supported on _id")
    values = parse_values(param.type, modifier, value, name=name)
    return Criterion(resource_type=query.resource_type, param=param, modifier=modifier, values=values)


def _modifier(resource_type: str | None, param, modifier: str | None, name: str) -> str | None:
    """The modifier, checked for the parameter's type; a reference's ``:Type`` is kept as is."""
    if modifier is None or modifier in MODIFIERS[param.type]:
        return modifier
    if param.type == "reference" and modifier in registry.resource_types():
        if param.targets and modifier not in param.targets:
            raise SearchError("invalid", f"{name}: {modifier} is not a target of {param.code}")
        return modifier
    if modifier in KNOWN_UNSUPPORTED:
        raise SearchError("not-supported", f"{name}: modifier :{modifier} is not supported")
    raise SearchError("invalid", f"{name}: unknown modifier :{modifier}")


def _chained(query: SearchQuery, param, type_modifier: str | None, chained: str, value: str,
             name: str, strict: bool) -> Criterion | None:
    """``subject:Patient.name=x``: one level, resolved on each target type defining ``name``."""
    if param.type != "reference":
        raise SearchError("invalid", f"{name}: only reference parameters can be chained")
    if "." in chained:
        raise SearchError("not-supported", f"{name}: only one level of chaining is supported")
    if type_modifier is not None:
        _modifier(query.resource_type, param, type_modifier, name)
    code, _, modifier = chained.partition(":")
    candidates = (type_modifier,) if type_modifier else _targets(param)
    types = tuple(t for t in candidates if code in _params_of(t) and _supported(t, code))
    if not types:
        _ignore(query, f"{name}: no target type of {param.code} has a search parameter {code!r}",
                strict)
        return None
    inner_param = _params_of(types[0])[code]
    inner_modifier = _modifier(types[0], inner_param, modifier or None, name)
    if inner_modifier not in (None, "exact", "contains", "text", "below", "above") and not (
            inner_param.type == "reference" and inner_modifier in registry.resource_types()):
        raise SearchError("not-supported", f"{name}: modifier :{inner_modifier} in a chain")
    values = parse_values(inner_param.type, inner_modifier, value, name=name)
    inner = Criterion(resource_type=None, param=inner_param, modifier=inner_modifier, values=values)
    return Criterion(resource_type=query.resource_type, param=param, modifier=type_modifier,
                     values=(), chain_types=types, chain=inner)


def _targets(param) -> tuple[str, ...]:
    types = registry.resource_types()
    return tuple(t for t in param.targets if t in types) if param.targets else tuple(types)


def _count(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    number = _non_negative(name, value)
    if number > MAX_COUNT:
        query.warnings.append(f"_count={number} reduced to the maximum {MAX_COUNT}")
        number = MAX_COUNT
    query.count = number


def _offset(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    query.offset = _non_negative(name, value)


def _non_negative(name: str, value: str) -> int:
    if not (value.isascii() and value.isdigit()) or len(value) > 9:
        raise SearchError("invalid", f"{name}: {value!r} is not a non-negative integer")
    return int(value)


def _sort(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    keys, applied = [], []
    for item in value.split(","):
        descending = item.startswith("-")
        code = item[1:] if descending else item
        if not code:
            raise SearchError("invalid", f"_sort: empty sort key in {value!r}")
        param = _lookup(query, query.resource_type, code, strict, f"_sort={code}")
        if param is None:
            continue
        if param.type not in SORTABLE:
            raise SearchError("not-supported", f"_sort: cannot sort by {code!r}")
        keys.append(SortKey(param=param, descending=descending))
        applied.append(item)
    query.sort = keys
    query.applied = [pair for pair in query.applied if pair[0] != "_sort"]
    if applied:
        query.applied.append(("_sort", ",".join(applied)))


def _include(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    base, _, modifier = name.partition(":")
    if modifier not in ("", "iterate", "recurse"):
        raise SearchError("invalid", f"{name}: unknown modifier :{modifier}")
    reverse = base == "_revinclude"
    include = _include_spec(query, name, value, strict, reverse=reverse, iterate=bool(modifier))
    if include is not None:
        query.includes.append(include)
        query.applied.append((name, value))


def _include_spec(query: SearchQuery, name: str, value: str, strict: bool, *, reverse: bool,
                  iterate: bool) -> Include | None:
    if value == "*":
        return Include(None, None, None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise SearchError("invalid", f"{name}: expected SourceType:parameter[:TargetType], got {value!r}")
    source, code = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    types = registry.resource_types()
    if source not in types or (target is not None and target not in types):
        raise SearchError("invalid", f"{name}: unknown resource type in {value!r}")
    if code == "*":
        return Include(source, None, target, iterate, reverse)
    param = registry.search_params(source).get(code)
    if param is None or param.type != "reference":
        _ignore(query, f"{name}: {source} has no reference parameter {code!r}", strict)
        return None
    return Include(source, code, target, iterate, reverse)


def _summary(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    if value not in SUMMARY_MODES:
        raise SearchError("invalid", f"_summary: {value!r} is not one of {', '.join(SUMMARY_MODES)}")
    query.summary = None if value == "false" else value
    _replace(query, "_summary", value)


def _elements(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    names = tuple(item.strip() for item in value.split(",") if item.strip())
    if not names or not all(item.replace("_", "").isalnum() for item in names):
        raise SearchError("invalid", f"_elements: {value!r} is not a list of element names")
    query.elements = names
    _replace(query, "_elements", ",".join(names))


def _total(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    if value not in TOTAL_MODES:
        raise SearchError("invalid", f"_total: {value!r} is not one of {', '.join(TOTAL_MODES)}")
    query.total = value
    _replace(query, "_total", value)


def _type(query: SearchQuery, name: str, value: str, strict: bool) -> None:
    if query.resource_type is not None:
        _ignore(query, "_type applies to a system search only", strict)
        return
    types = tuple(split_escaped(value, ","))
    unknown = [t for t in types if t not in registry.resource_types()]
    if unknown:
        raise SearchError("invalid", f"_type: unknown resource type {unknown[0]!r}")
    query.types = types
    _replace(query, "_type", value)


def _replace(query: SearchQuery, name: str, value: str) -> None:
    query.applied = [pair for pair in query.applied if pair[0] != name]
    query.applied.append((name, value))


RESULT_PARAMS = {
    "_count": _count,
    "_offset": _offset,
    "_sort": _sort,
    "_include": _include,
    "_revinclude": _include,
    "_summary": _summary,
    "_elements": _elements,
    "_total": _total,
    "_type": _type,
}
