"""Referential integrity on write: a local reference names a resource the writer may reference.

Decided as HAPI FHIR's default (``enforceReferentialIntegrityOnWrite``): every local relative
reference (``Type/id``, with or without ``/_history/n``) that a search parameter indexes must
name a live resource on this node; absolute URLs, canonicals, contained (``#id``), ``urn:``
and identifier-only references are not checked, nor those to a Patient or of a Consent
(``UNCHECKED_TARGETS``, ``UNCHECKED_SOURCES``). Unlike HAPI, "exists" means "exists and is
one the writer may read": a resource of another hospital answers exactly as a missing one
(422, the element and the reference named), so no write can probe which ids exist. The
organizations of the node (an account's, or one that owns records) are public (consents name
them as grantees): they may always be referenced, and ``ehr.rules`` refuses (403) making
another's one the owner of a record.

Single writes and batch entries are checked as they are written; a transaction Bundle
checks all its writes at its end, so an entry may reference one created later in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache

from django.db.models import Exists, OuterRef, Q

from ehr.fhir import FhirError, issue
from ehr.models import ReferenceIndex, Resource
from ehr.ownership import node_organizations
from ehr.searchparams import search_params


class Unresolvable(FhirError):
    """A reference to nothing the writer may reference; ``resource_pk`` is the row that holds it."""

    resource_pk: int | None = None


# A Patient may be linked to or be the focus of another hospital's record (``Patient.link`` to
# the same person registered elsewhere): such references are stored unresolved, for a missing
# patient as for a hidden one. The compartment's own Patient is ``ehr.services.storage``'s.
UNCHECKED_TARGETS = frozenset({"Patient"})
# A Consent names grantees anywhere in the consortium, most of them on other nodes.
UNCHECKED_SOURCES = frozenset({"Consent"})

# Inside a transaction Bundle: per writer, what it may reference and the pks to check at the end.
_deferred: ContextVar[dict[int, tuple[Q, list[int]]] | None] = ContextVar("deferred_references", default=None)


def references_require(rows: list[Resource], referable: Q, *, writer: object) -> None:
    """Refuse (422) the first local reference of these rows to nothing the writer may reference.

    ``writer`` (the caller's access context) groups a transaction's checks: one query each.
    """
    rows = [row for row in rows if row.resource_type not in UNCHECKED_SOURCES]
    pending = _deferred.get()
    if pending is not None:
        pending.setdefault(id(writer), (referable, []))[1].extend(row.pk for row in rows)
    elif rows:
        _check([row.pk for row in rows], referable)


@contextmanager
def references_settled_at_end() -> Iterator[None]:
    """Defer the checks of a transaction Bundle's writes to its end (all-or-nothing anyway)."""
    token = _deferred.set({})
    try:
        yield
        pending = _deferred.get()
    finally:
        _deferred.reset(token)
    for referable, pks in pending.values():
        _check(pks, referable)


def _check(pks: list[int], referable: Q) -> None:
    targets = Resource.objects.filter(referable, deleted=False, resource_type=OuterRef("target_type"),
                                      logical_id=OuterRef("target_id"))
    found = list(ReferenceIndex.objects.filter(resource_id__in=pks, url__isnull=True, target_type__isnull=False)
                 .exclude(target_type__in=UNCHECKED_TARGETS).exclude(Exists(targets))
                 .order_by("resource_id", "param", "target_type", "target_id")
                 .values_list("resource_id", "resource__resource_type", "param", "target_type", "target_id"))
    public = node_organizations(u[4] for u in found if u[3] == "Organization")
    for pk, resource_type, param, target_type, target_id in found:
        if not (target_type == "Organization" and target_id in public):
            raise unresolvable(resource_type, param, f"{target_type}/{target_id}", pk)


def unresolvable(resource_type: str, param: str, reference: str, resource_pk: int | None = None) -> Unresolvable:
    """The one answer for a reference to nothing: missing, deleted, or not the writer's to see."""
    expression = element_path(resource_type, param)
    message = f"{expression} refers to {reference}, which is not a resource this account may reference"
    refusal = Unresolvable(422, "processing", message, issues=[issue("error", "processing", message, expression)])
    refusal.resource_pk = resource_pk
    return refusal


@cache
def element_path(resource_type: str, param: str) -> str:
    """The element a reference search parameter indexes (``Patient.managingOrganization``)."""
    definition = search_params(resource_type).get(param)
    expression = definition.expression if definition is not None and definition.expression else ""
    for part in expression.split("|"):
        path = re.sub(r"\.where\(.*$|\.resolve\(\).*$|\s+as\s+\w+.*$|\.as\(.*$", "", part.strip().strip("()"))
        if path.startswith(resource_type + "."):
            return path
    return f"{resource_type}.{param}"
