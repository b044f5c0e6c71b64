"""Batch and transaction Bundles posted to the base URL.

A transaction is all-or-nothing, processed in the spec's order (DELETE, POST, PUT/PATCH,
GET) with ``urn:uuid:`` references rewritten to the ids the server assigns; plain creates
are written in bulk. A batch runs each entry on its own savepoint, so entries fail
independently. Responses list the entries in request order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from ehr import fhirjson
from ehr.bindings import issues_in_entry
from ehr.fhir import (
    ID_PATTERN,
    FhirError,
    instant,
    issue,
    json_error,
    operation_outcome,
    parse_resource,
    require_resource_type,
)
from ehr.models import Resource
from ehr.references import Unresolvable, references_settled_at_end

from . import resources as single
from .storage import Pending, insert_new, new_id, patients_settled_at_end

PROCESSING_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
REFERENCE = re.compile(r'("reference"\s*:\s*")(urn:uuid:[0-9a-fA-F-]{36}|urn:oid:[0-9.]+)(")')

GetHandler = Callable[[str], tuple[int, str]]
# Called before each write entry (row None; target: the id, "?criteria" or None) and after it
# with the written row; raises FhirError to refuse the entry.
Authorize = Callable[[str, str, "str | None", "Resource | None"], None]
# What a Bundle wrote, for its audit: (create, update or delete, the row as written).
Written = list[tuple[str, Resource]]


@dataclass
class Entry:
    index: int
    method: str
    url: str
    full_url: str | None
    resource_text: str | None
    if_none_exist: str | None = None
    if_match: str | None = None
    assigned_id: str | None = None
    response: str = ""  # the response entry's JSON text, once processed
    resource: Resource | None = field(default=None, repr=False)


@dataclass
class Context:
    """What every entry of one Bundle shares: the GET handler, the answer shape, the writer."""

    handle_get: GetHandler
    return_resources: bool
    organization_id: str | None
    authorize: Authorize | None = None
    visible: Q | None = None  # what conditional entries may match (the caller's records)
    written: Written = field(default_factory=list)

    def check(self, interaction: str, resource_type: str, target: str | None = None,
              row: Resource | None = None) -> None:
        if self.authorize is not None:
            self.authorize(interaction, resource_type, target, row)


def bundle_process(*, text: str, handle_get: GetHandler, return_resources: bool = False,
                   organization_id: str | None = None, authorize: Authorize | None = None,
                   visible: Q | None = None, written: Written | None = None) -> tuple[str, str]:
    """Run a batch or transaction Bundle; returns its type and the response Bundle's text.

    A refused transaction raises ``FhirError`` (its OperationOutcome is the answer).

    ``authorize`` (the caller's access policy) sees every write entry before and after it
    runs; a refusal fails that entry (batch) or the whole Bundle (transaction). ``written``
    receives each write that took effect, so that the audit can name every resource.
    """
    bundle_type, entries = _parse_bundle(text)
    context = Context(handle_get, return_resources, organization_id, authorize, visible,
                      written if written is not None else [])
    if bundle_type == "transaction":
        with transaction.atomic(), patients_settled_at_end():
            try:
                with references_settled_at_end():
                    _run_transaction(entries, context)
            except Unresolvable as error:
                raise _entry_refusal(entries, error) from None
    else:
        _run_batch(entries, context)
    body = (f'{{"resourceType":"Bundle","type":"{bundle_type}-response","entry":['
            + ",".join(entry.response for entry in entries) + "]}")
    return bundle_type, body


def _parse_bundle(text: str) -> tuple[str, list[Entry]]:
    """The Bundle's type and entries; more than FHIR_BUNDLE_MAX_ENTRIES is 413, counted while splitting."""
    limit = settings.FHIR_BUNDLE_MAX_ENTRIES
    try:
        members = dict(fhirjson.split_members(text))
        resource_type = fhirjson.value(members.get("resourceType", "null"))
        bundle_type = fhirjson.value(members.get("type", "null"))
        raw_entries = fhirjson.split_array(members["entry"], limit=limit) if "entry" in members else []
    except fhirjson.FhirJsonError as error:
        raise json_error(error) from None
    if resource_type != "Bundle":
        raise FhirError(400, "invalid", "The base URL accepts only a Bundle")
    if bundle_type not in ("batch", "transaction"):
        raise FhirError(400, "invalid", f"Bundle.type must be batch or transaction, not {bundle_type!r}")
    return bundle_type, [_parse_entry(index, raw) for index, raw in enumerate(raw_entries)]


def _parse_entry(index: int, raw: str) -> Entry:
    try:
        members = dict(fhirjson.split_members(raw))
        request = fhirjson.loads(members.get("request", "{}"))
        full_url = fhirjson.value(members["fullUrl"]) if "fullUrl" in members else None
    except fhirjson.FhirJsonError as error:
        raise json_error(error, f"entry[{index}]: ") from None
    method, url = request.get("method"), request.get("url")
    if method not in PROCESSING_ORDER or not isinstance(url, str) or not url:
        raise FhirError(400, "invalid", f"entry[{index}]: request.method and request.url are required")
    if method == "POST" and _split_url(url)[1] is not None:  # the server assigns a created resource's id
        raise FhirError(400, "invalid", f"entry[{index}]: a POST's request.url names the resource type only")
    for name, value in (("fullUrl", full_url), ("request.ifNoneExist", request.get("ifNoneExist")),
                        ("request.ifMatch", request.get("ifMatch"))):
        if value is not None and not isinstance(value, str):
            raise FhirError(400, "invalid", f"entry[{index}]: {name} must be a string")
    return Entry(index, method, url.lstrip("/"), full_url, members.get("resource"),
                 request.get("ifNoneExist"), request.get("ifMatch"))


def _run_transaction(entries: list[Entry], context: Context) -> None:
    _lock_targets(entries)
    identities = _assign_identities(entries, context)
    for entry in entries:
        if entry.resource_text is not None:
            entry.resource_text = _rewrite_references(entry, identities)
    ordered = sorted(entries, key=lambda e: (PROCESSING_ORDER[e.method], e.index))
    creates = [e for e in ordered if e.method == "POST" and e.response == ""]
    _bulk_create(creates, context)
    for entry in ordered:
        if entry.response:
            continue
        try:
            status = _run_entry(entry, context)
        except FhirError as error:
            raise FhirError(error.status, error.code,
                            f"entry[{entry.index}] {entry.method} {entry.url}: {error.diagnostics}",
                            issues=issues_in_entry(error.issues, entry.index)) from None
        if status >= 400:
            raise FhirError(status, "processing", f"entry[{entry.index}] {entry.method} {entry.url} failed")


def _entry_refusal(entries: list[Entry], error: Unresolvable) -> FhirError:
    """A reference refused at the transaction's end, named by its entry as one refused sooner."""
    entry = next((e for e in entries if e.resource is not None and e.resource.pk == error.resource_pk), None)
    if entry is None:
        return error
    prefix = f"entry[{entry.index}] {entry.method} {entry.url}: "
    issues = [{**item, "diagnostics": prefix + item["diagnostics"],
               "expression": [re.sub(r"^[A-Za-z]+\.", f"Bundle.entry[{entry.index}].resource.", path)
                              for path in item.get("expression", [])]}
              for item in error.issues or []]
    return FhirError(error.status, error.code, prefix + error.diagnostics, issues=issues)


def _lock_targets(entries: list[Entry]) -> None:
    """Lock what the transaction's entries will write, in the canonical order, before any write.

    Entries run in the Bundle's order, so two Bundles naming the same resources in opposite
    orders would each hold what the other waits for (a deadlock, formerly a 500). Taken up
    front: the criteria of conditional entries and the ids of PUT/DELETE entries (advisory),
    then the rows of those ids that exist (``FOR UPDATE``). What only a conditional entry's
    match reveals is locked when it runs; a rare deadlock left there is rerun by the door.
    """
    keys: set[str] = set()
    rows: set[tuple[str, str]] = set()
    for entry in entries:
        if "\x00" in entry.url + (entry.if_none_exist or ""):
            continue  # PostgreSQL text cannot hold it: a 400 when the entry runs
        resource_type, logical_id = _split_url(entry.url)
        query = entry.url.partition("?")[2]
        criteria = entry.if_none_exist if entry.method == "POST" else query
        if entry.method in ("POST", "PUT", "DELETE") and criteria:
            pairs = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
            if pairs:  # none is a 400 when the entry runs
                keys.add(single.criteria_lock_key(resource_type, pairs))
        elif entry.method in ("PUT", "DELETE") and logical_id and ID_PATTERN.fullmatch(logical_id):
            keys.add(single.id_lock_key(resource_type, logical_id))
            rows.add((resource_type, logical_id))
    single.locks_take(keys=keys, rows=rows)


def _assign_identities(entries: list[Entry], context: Context) -> dict[str, str]:
    """fullUrl → 'Type/id' for every entry that creates or names a resource."""
    identities: dict[str, str] = {}
    for entry in entries:
        resource_type, logical_id = _split_url(entry.url)
        if entry.method == "POST":
            context.check("create", resource_type)
            if entry.if_none_exist:
                try:
                    matches = single._conditional_matches(resource_type, single._criteria(entry.if_none_exist),
                                                         context.visible)
                except FhirError as error:
                    raise FhirError(error.status, error.code,
                                    f"entry[{entry.index}] ifNoneExist: {error.diagnostics}") from None
                if matches:
                    context.check("create", resource_type, matches[0].logical_id, matches[0])
                    entry.resource = matches[0]
                    entry.response = _response(matches[0], "200 OK", return_resources=False)
                    logical_id = matches[0].logical_id
            logical_id = logical_id or new_id()
            entry.url = f"{resource_type}/{logical_id}" if entry.response else resource_type
            entry.assigned_id = logical_id
        if entry.full_url and logical_id:
            identities[entry.full_url] = f"{resource_type}/{logical_id}"
    return identities


def _rewrite_references(entry: Entry, identities: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        target = identities.get(match.group(2))
        if target is None:
            raise FhirError(400, "invalid", f"entry[{entry.index}]: unresolved reference {match.group(2)}")
        return match.group(1) + target + match.group(3)

    return REFERENCE.sub(replace, entry.resource_text)


def _bulk_create(entries: list[Entry], context: Context) -> None:
    pendings = []
    for entry in entries:
        resource_type, _ = _split_url(entry.url)
        require_resource_type(resource_type)
        try:
            parsed = parse_resource(entry.resource_text or "", expected_type=resource_type)
        except FhirError as error:
            raise FhirError(error.status, error.code, f"entry[{entry.index}]: {error.diagnostics}",
                            issues=issues_in_entry(error.issues, entry.index)) from None
        pendings.append(Pending(resource_type, entry.assigned_id, entry.resource_text, parsed, "POST",
                                context.organization_id))
    for entry, row in zip(entries, insert_new(pendings)):
        context.check("create", row.resource_type, row.logical_id, row)
        context.written.append(("create", row))
        entry.resource = row
        entry.response = _response(row, "201 Created", context.return_resources)


def _run_batch(entries: list[Entry], context: Context) -> None:
    """Each entry in turn, while the answer stays within FHIR_MAX_RESPONSE_BYTES.

    Entries past the budget fail unrun (413 too-costly); a read whose answer would cross it
    fails too. A write that crossed it already took effect: its answer is kept.
    """
    budget = settings.FHIR_MAX_RESPONSE_BYTES
    too_costly = FhirError(413, "too-costly", f"The batch answer would exceed {budget} bytes; send fewer entries")
    for entry in entries:
        if budget <= 0:
            entry.response = _error_response(too_costly)
            continue
        _run_batch_entry(entry, context)
        if entry.method in ("GET", "HEAD") and len(entry.response) > budget:
            entry.response, budget = _error_response(too_costly), 0
        budget -= len(entry.response)


def _run_batch_entry(entry: Entry, context: Context) -> None:
    try:
        with transaction.atomic():
            if entry.method == "POST":
                resource_type, _ = _split_url(entry.url)
                context.check("create", resource_type)
                outcome = single.resource_create(resource_type=resource_type, text=entry.resource_text or "",
                                                 if_none_exist=entry.if_none_exist,
                                                 organization_id=context.organization_id,
                                                 visible=context.visible)
                context.check("create", resource_type, outcome.resource.logical_id, outcome.resource)
                if outcome.created:
                    context.written.append(("create", outcome.resource))
                entry.response = _response(outcome.resource, "201 Created" if outcome.created else "200 OK",
                                           context.return_resources)
            else:
                _run_entry(entry, context)
    except FhirError as error:
        entry.response = _error_response(error)


def _run_entry(entry: Entry, context: Context) -> int:
    """Run one non-create entry; returns its HTTP status."""
    return_resources = context.return_resources
    if entry.method in ("GET", "HEAD"):
        status, body = context.handle_get(entry.url)
        entry.response = f'{{"response":{{"status":"{status}"}}' + (f',"resource":{body}' if body else "") + "}"
        return status
    resource_type, logical_id = _split_url(entry.url)
    query = entry.url.partition("?")[2]
    if entry.method == "DELETE":
        context.check("delete", resource_type, _required_id(logical_id, entry))
        row = single.resource_delete(resource_type=resource_type, logical_id=_required_id(logical_id, entry))
        context.written.append(("delete", row))
        entry.response = '{"response":{"status":"204 No Content"}}'
    elif entry.method == "PUT" and query:
        context.check("update", resource_type, "?" + query)
        outcome = single.resource_conditional_update(resource_type=resource_type, query=query,
                                                     text=entry.resource_text or "",
                                                     organization_id=context.organization_id,
                                                     visible=context.visible)
        entry.resource = outcome.resource
        context.check("update", resource_type, outcome.resource.logical_id, outcome.resource)
        context.written.append(("create" if outcome.status == 201 else "update", outcome.resource))
        entry.response = _response(outcome.resource, _status_line(outcome.status), return_resources)
    elif entry.method == "PUT":
        context.check("update", resource_type, _required_id(logical_id, entry))
        outcome = single.resource_update(resource_type=resource_type, logical_id=_required_id(logical_id, entry),
                                         text=entry.resource_text or "", if_match=entry.if_match,
                                         organization_id=context.organization_id)
        entry.resource = outcome.resource
        context.check("update", resource_type, outcome.resource.logical_id, outcome.resource)
        context.written.append(("create" if outcome.status == 201 else "update", outcome.resource))
        entry.response = _response(outcome.resource, _status_line(outcome.status), return_resources)
    else:
        raise FhirError(405, "not-supported", "PATCH in a Bundle is not supported; PATCH the resource itself")
    return 200


def _split_url(url: str) -> tuple[str, str | None]:
    path = urlsplit(url).path.strip("/")
    parts = path.split("/")
    return parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)


def _required_id(logical_id: str | None, entry: Entry) -> str:
    if not logical_id:
        raise FhirError(400, "invalid", f"entry[{entry.index}]: {entry.method} needs Type/id in request.url")
    return logical_id


def _status_line(status: int) -> str:
    return {200: "200 OK", 201: "201 Created"}[status]


def _response(row: Resource, status: str, return_resources: bool) -> str:
    response = {
        "status": status,
        "location": f"{row.resource_type}/{row.logical_id}/_history/{row.version_id}",
        "etag": f'W/"{row.version_id}"',
        "lastModified": instant(row.last_updated),
    }
    body = f'{{"fullUrl":{fhirjson.dumps(row.resource_type + "/" + row.logical_id)}'
    if return_resources:
        body += f',"resource":{row.text}'
    return body + f',"response":{fhirjson.dumps(response)}}}'


def _error_response(error: FhirError) -> str:
    outcome = operation_outcome(error.issues or [issue("error", error.code, error.diagnostics)])
    reason = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
              410: "Gone", 412: "Precondition Failed", 413: "Content Too Large",
              422: "Unprocessable Entity"}.get(error.status, "Error")
    return fhirjson.dumps({"response": {"status": f"{error.status} {reason}", "outcome": outcome}})
