"""The searchset Bundle as JSON text, assembled around each resource's stored text verbatim.

``_summary`` and ``_elements`` pick top-level members of the stored text with
``fhirjson.split_members``; only ``meta`` is re-serialized, to add the SUBSETTED tag.
"""

from __future__ import annotations

import uuid
from functools import cache

from ehr import envelope, fhirjson
from ehr.models import Resource

from .engine import SearchResult
from .query import SearchQuery

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS_KEPT = ("resourceType", "id", "meta")


def searchset_bundle(result: SearchResult, *, base_url: str, resource_type: str | None,
                     query: SearchQuery) -> str:
    """The Bundle; ``base_url`` is the service base without a trailing slash."""
    entries = [_outcome_entry(result.warnings)] if result.warnings else []
    entries += [_entry(r, base_url, "match", query.summary, query.elements) for r in result.matches]
    entries += [_entry(r, base_url, "include", query.summary, ()) for r in result.included]
    links = envelope.paging_links(f"{base_url}/{resource_type}" if resource_type else base_url, query.applied,
                                  offset=result.offset, count=result.count, has_next=result.has_next)
    return envelope.bundle("searchset", None if query.summary == "count" else entries,
                           total=result.total, links=links)


def _entry(resource: Resource, base_url: str, mode: str, summary: str | None, elements: tuple) -> str:
    full_url = f"{base_url}/{resource.resource_type}/{resource.logical_id}"
    return envelope.entry(full_url, _subset(resource, summary, elements), mode=mode)


def _outcome_entry(warnings: list[str]) -> str:
    issues = [{"severity": "warning", "code": "not-supported", "diagnostics": text} for text in warnings]
    outcome = {"resourceType": "OperationOutcome", "issue": issues}
    return fhirjson.dumps({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": outcome,
                           "search": {"mode": "outcome"}})


def _subset(resource: Resource, summary: str | None, elements: tuple) -> str:
    if not summary and not elements:
        return resource.text
    members = fhirjson.split_members(resource.text)
    if elements:
        keep = set(ALWAYS_KEPT) | set(elements) | set(mandatory_elements(resource.resource_type))
    elif summary == "true":
        keep = set(ALWAYS_KEPT) | summary_elements(resource.resource_type)
    elif summary == "text":
        keep = set(ALWAYS_KEPT) | {"text"} | set(mandatory_elements(resource.resource_type))
    else:  # data
        keep = {name for name, _ in members} - {"text"}
    kept = [(name, raw) for name, raw in members if name in keep or name[1:] in keep and name[0] == "_"]
    if len(kept) == len(members):
        return resource.text
    return fhirjson.join_members(_tag_subsetted(kept))


def _tag_subsetted(members: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Add the SUBSETTED tag to ``meta`` (the only member re-serialized)."""
    names = [name for name, _ in members]
    meta = fhirjson.loads(members[names.index("meta")][1]) if "meta" in names else {}
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    raw = fhirjson.dumps(meta)
    if "meta" in names:
        members[names.index("meta")] = ("meta", raw)
    else:
        members.insert(names.index("id") + 1 if "id" in names else 1, ("meta", raw))
    return members


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Elements marked summary in the R4B definitions, plus the mandatory ones."""
    model = _model(resource_type)
    summary = set(model.summary_elements_sequence()) if model else set()
    return frozenset(summary | set(mandatory_elements(resource_type)))


@cache
def mandatory_elements(resource_type: str) -> tuple[str, ...]:
    model = _model(resource_type)
    if model is None:
        return ()
    names = []
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("element_required"):
            names.append(info.alias or name)
    return tuple(names)


def _model(resource_type: str):
    from fhir.resources.R4B import get_fhir_model_class

    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, ImportError, AttributeError):
        return None
