"""Writes of single resources: create, update, patch, delete, and their conditional forms.

Each service runs in one database transaction; a failure leaves nothing written.
Conditional writes take a transaction-scoped advisory lock on their criteria, so
concurrent identical requests are serialized and create at most one resource.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

import jsonpatch
from django.db import IntegrityError, connection, transaction
from django.db.models import Q

from ehr import fhirjson
from ehr.fhir import FhirError, check_id, json_error, parse_resource, require_resource_type
from ehr.models import Resource
from ehr.selectors import resource_present

from . import ledger_mirror
from .storage import Pending, insert_new, mark_deleted, new_id, replace_current

MAX_CONDITIONAL_MATCHES = 2


@dataclass
class WriteOutcome:
    resource: Resource
    created: bool

    @property
    def status(self) -> int:
        return 201 if self.created else 200


def resource_create(*, resource_type: str, text: str, if_none_exist: str | None = None,
                    organization_id: str | None = None, visible: Q | None = None) -> WriteOutcome:
    """Create with a server-assigned id (any id in the body is replaced, as the spec says)."""
    require_resource_type(resource_type)
    parsed = parse_resource(text, expected_type=resource_type)
    with transaction.atomic():
        if if_none_exist is not None:
            existing = _conditional_matches(resource_type, _criteria(if_none_exist), visible)
            if existing:
                return WriteOutcome(existing[0], created=False)
        pending = Pending(resource_type, new_id(), text, parsed, "POST", organization_id)
        return WriteOutcome(insert_new([pending])[0], created=True)


def resource_update(*, resource_type: str, logical_id: str, text: str, if_match: str | None = None,
                    organization_id: str | None = None) -> WriteOutcome:
    """Update, or create with the client's id when none exists (update-as-create)."""
    require_resource_type(resource_type)
    check_id(logical_id)
    parsed = parse_resource(text, expected_type=resource_type)
    if parsed.get("id") != logical_id:
        raise FhirError(400, "invalid", f"The resource id must be present and equal '{logical_id}'")
    pending = Pending(resource_type, logical_id, text, parsed, "PUT", organization_id)
    with transaction.atomic():
        row = _locked(resource_type, logical_id)
        if row is None:
            if if_match is not None:
                raise FhirError(412, "conflict", f"{resource_type}/{logical_id} does not exist")
            created = _insert_unless_raced(pending)
            if created is not None:
                return WriteOutcome(created, created=True)
            row = _locked(resource_type, logical_id)
        _check_version(row, if_match)
        return WriteOutcome(replace_current(row, pending), created=False)


def resource_conditional_update(*, resource_type: str, query: str, text: str,
                                organization_id: str | None = None, visible: Q | None = None) -> WriteOutcome:
    """PUT Type?criteria: create on no match, update the one match, 412 on several."""
    require_resource_type(resource_type)
    parsed = parse_resource(text, expected_type=resource_type)
    with transaction.atomic():
        matches = _conditional_matches(resource_type, _criteria(query), visible)
        if not matches:
            _refuse_client_id(parsed)
            pending = Pending(resource_type, new_id(), text, parsed, "PUT", organization_id)
            return WriteOutcome(insert_new([pending])[0], created=True)
        row = _locked(resource_type, matches[0].logical_id)
        if parsed.get("id") not in (None, row.logical_id):
            raise FhirError(400, "invalid", "The body's id differs from the resource the criteria match")
        pending = Pending(resource_type, row.logical_id, text, parsed, "PUT")
        return WriteOutcome(replace_current(row, pending), created=False)


def resources_create_with_ids(*, resource_type: str, items: list[tuple[str, str, str]]) -> list[Resource]:
    """Create resources known to be new, with ids the caller chose: (logical_id, text, owner) each.

    Each is validated; all are inserted together (one statement per table, with versions,
    indexes and owners as any create) for a caller that writes many at once (imaging's ingest).
    """
    pending = [Pending(resource_type, logical_id, text, parse_resource(text, expected_type=resource_type),
                       "PUT", organization_id) for logical_id, text, organization_id in items]
    return insert_new(pending) if pending else []


def resource_owner_claim(*, row: Resource, organization_id: str) -> None:
    """Give a resource to an organization (a server-owned resource a squatter once wrote)."""
    if Resource.objects.filter(pk=row.pk).exclude(organization_id=organization_id).update(
            organization_id=organization_id):
        ledger_mirror.owner_claimed(row, organization_id)


def _refuse_client_id(parsed: dict) -> None:
    """A conditional update that matches nothing creates with a server id (400 for a body id).

    Creating with the client's id would fail, or not, by whether a resource the caller cannot
    see holds that id: an existence oracle (and formerly a 500). The same answer for every id.
    """
    if parsed.get("id") is not None:
        raise FhirError(400, "invalid", "The criteria match nothing: send the resource without an id "
                                        "(the server assigns one), or PUT it to Type/id")


def resource_patch(*, resource_type: str, logical_id: str, patch_text: str,
                   if_match: str | None = None) -> WriteOutcome:
    """JSON Patch (RFC 6902) applied to the current version, then validated like any update."""
    require_resource_type(resource_type)
    try:
        patch = jsonpatch.JsonPatch(fhirjson.loads('{"p":' + patch_text + "}")["p"])
    except fhirjson.FhirJsonError as error:
        raise json_error(error, "Invalid JSON Patch: ") from None
    except (jsonpatch.InvalidJsonPatch, TypeError) as error:
        raise FhirError(400, "structure", f"Invalid JSON Patch: {error}") from None
    with transaction.atomic():
        row = resource_present(_locked(resource_type, logical_id), resource_type=resource_type,
                               logical_id=logical_id)
        _check_version(row, if_match)
        try:
            patched = _apply_bounded(patch, fhirjson.loads(row.text))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise FhirError(422, "processing", f"The patch cannot be applied: {error}") from None
        if patched.get("resourceType") != resource_type or patched.get("id") != logical_id:
            raise FhirError(422, "processing", "A patch may not change resourceType or id")
        text = fhirjson.dumps(patched)
        parse_resource(text, expected_type=resource_type)
        pending = Pending(resource_type, logical_id, text, patched, "PATCH")
        return WriteOutcome(replace_current(row, pending), created=False)


def _apply_bounded(patch: jsonpatch.JsonPatch, document: dict) -> dict:
    """Apply operation by operation, held to the JSON reader's bounds all along.

    ``copy`` doubles what it copies: twenty copies of a copy make a million values, and nested
    copies a document too deep to serialize, long before the result could be checked. Each
    value an operation brings in is measured first (a stack walk; what was already measured
    counts against the budget, so the walks stay linear in the budget).
    """
    limits = fhirjson.LIMITS
    budget = limits.max_values - fhirjson.measure(document, limit=limits.max_values)[1]
    for operation in patch._ops:
        op = operation.operation
        if op.get("op") in ("add", "replace", "copy"):
            source = op.get("from")
            if op["op"] == "copy" and not isinstance(source, str):
                raise FhirError(400, "structure", "Invalid JSON Patch: copy needs a 'from' pointer")
            value = jsonpatch.JsonPointer(source).resolve(document) if op["op"] == "copy" else op.get("value")
            depth, values = fhirjson.measure(value, limit=max(budget, 0))
            budget -= values
            if budget < 0:
                raise FhirError(413, "too-costly",
                                f"The patched resource would have more than {limits.max_values} values")
            if len(operation.pointer.parts) + depth > limits.max_depth:
                raise FhirError(400, "too-costly",
                                f"The patched resource would nest deeper than {limits.max_depth} levels")
        document = operation.apply(document)
    return document


def resource_delete(*, resource_type: str, logical_id: str) -> Resource:
    """Delete (a new, deleted version); deleting a deleted resource changes nothing."""
    require_resource_type(resource_type)
    with transaction.atomic():
        row = _locked(resource_type, logical_id)
        if row is None:
            raise FhirError(404, "not-found", f"{resource_type}/{logical_id} is not known")
        return row if row.deleted else mark_deleted(row)


def criteria_lock_key(resource_type: str, criteria: list[tuple[str, str]]) -> str:
    """The advisory lock key of conditional criteria: the same criteria in any order, one key."""
    return resource_type + "?" + "&".join(f"{k}={v}" for k, v in sorted(criteria))


def id_lock_key(resource_type: str, logical_id: str) -> str:
    """The advisory lock key of a resource id, existing or not (a '/' where criteria have a '?')."""
    return f"{resource_type}/{logical_id}"


def locks_take(*, keys: set[str], rows: set[tuple[str, str]]) -> None:
    """Take advisory locks, then row locks, each in one canonical order, before any write.

    Two transactions that lock the same things in different orders deadlock (PostgreSQL
    aborts one); locking everything up front, advisory keys by their hash and rows by
    (resource_type, logical_id), makes them queue instead. An advisory lock per id covers
    the ids nobody holds yet, whose concurrent inserts would otherwise wait on each other's
    unique-key entries in entry order. Both are re-entrant: the writes that follow take
    the same locks again without waiting.
    """
    if keys:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_advisory_xact_lock(h)) FROM (SELECT hashtextextended(k, 0) AS h"
                           " FROM unnest(%s::text[]) AS k ORDER BY h) AS ordered", [sorted(keys)])
    if rows:
        by_type: dict[str, list[str]] = {}
        for resource_type, logical_id in rows:
            by_type.setdefault(resource_type, []).append(logical_id)
        wanted = Q()
        for resource_type, ids in by_type.items():
            wanted |= Q(resource_type=resource_type, logical_id__in=ids)
        # FOR UPDATE locks rows as the sort returns them: in (resource_type, logical_id) order.
        list(Resource.objects.select_for_update().filter(wanted)
             .order_by("resource_type", "logical_id").values_list("pk", flat=True))


def _locked(resource_type: str, logical_id: str) -> Resource | None:
    return (Resource.objects.select_for_update()
            .filter(resource_type=resource_type, logical_id=logical_id).first())


def _insert_unless_raced(pending: Pending) -> Resource | None:
    """Insert under a savepoint; None when a concurrent request created the same id first."""
    try:
        with transaction.atomic():
            return insert_new([pending])[0]
    except IntegrityError:
        return None


def _check_version(row: Resource, if_match: str | None) -> None:
    if if_match is None:
        return
    wanted = re.fullmatch(r'\s*(?:W/)?"?([^"]+)"?\s*', if_match)
    if not wanted or wanted.group(1) != str(row.version_id):
        raise FhirError(412, "conflict", f"Version conflict: the current version is {row.version_id}",
                        headers={"ETag": f'W/"{row.version_id}"'})


def _criteria(query: str) -> list[tuple[str, str]]:
    criteria = parse_qsl(query.lstrip("?"), keep_blank_values=True)
    if not criteria:
        raise FhirError(400, "invalid", "A conditional request needs search criteria")
    return criteria


def _conditional_matches(resource_type: str, criteria: list[tuple[str, str]],
                         visible: Q | None = None) -> list[Resource]:
    """Resources matching the criteria, serialized per criteria for the rest of the transaction.

    Only resources the caller may see can match (``visible``): a conditional request must not
    reveal, by its answer, what another hospital holds.
    """
    from ehr.search import SearchError, parse_search, run_search

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       [criteria_lock_key(resource_type, criteria)])
    try:
        query = parse_search(resource_type, [*criteria, ("_count", str(MAX_CONDITIONAL_MATCHES))],
                             strict=True)
    except SearchError as error:
        raise FhirError(400, error.code, f"Invalid criteria: {error.message}") from None
    matches = run_search(query, visible=visible).matches
    if len(matches) > 1:
        raise FhirError(412, "multiple-matches", f"The criteria match more than one {resource_type}")
    return matches
