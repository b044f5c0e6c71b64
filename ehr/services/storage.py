"""Low-level persistence shared by every write: stamp id and meta, store versions, rewrite indexes.

Writes are batched (one INSERT for the resources, COPY for versions and index rows) so a
transaction Bundle of thousands of resources costs a few statements per table, not one per resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields
from datetime import datetime

import psycopg
from django.db import DataError, connection
from django.utils import timezone

from ehr import fhirjson
from ehr.fhir import FhirError, instant, issue, patient_not_writable, refuse_server_written
from ehr.indexing import IndexValues, extract_index_values
from ehr.models import INDEX_MODELS, Resource, ResourceVersion
from ehr.searchparams import patient_compartment, search_params
from ehr.subscriptions import outbox as subscription_outbox

from . import ledger_mirror
from .. import ownership

# Inside a transaction Bundle, rows whose patient does not exist yet: checked at its end.
_awaiting_patients: ContextVar[list[Resource] | None] = ContextVar("awaiting_patients", default=None)

# Which list of ``IndexValues`` feeds the index table of each parameter type.
VALUE_LISTS = {"string": "strings", "token": "tokens", "date": "dates", "reference": "references",
               "quantity": "quantities", "number": "numbers", "uri": "uris"}


@dataclass
class Pending:
    """A validated resource about to be written: its client text and its parsed form."""

    resource_type: str
    logical_id: str
    text: str
    parsed: dict
    method: str = "POST"
    organization_id: str | None = None  # the writer's organization, owner of a new resource


def new_id() -> str:
    return str(uuid.uuid4())


def stamp(pending: Pending, *, version_id: int, last_updated: datetime) -> str:
    """The client's text with the server's id and meta spliced in; nothing else re-serialized."""
    meta = dict(pending.parsed.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = instant(last_updated)
    pending.parsed["id"] = pending.logical_id
    pending.parsed["meta"] = meta
    replacements = {"id": fhirjson.dumps(pending.logical_id), "meta": fhirjson.dumps(meta)}
    members = [(name, replacements.pop(name, raw)) for name, raw in fhirjson.split_members(pending.text)]
    position = 1 if members and members[0][0] == "resourceType" else 0
    for name in ("meta", "id"):
        if name in replacements:
            members.insert(position, (name, replacements[name]))
    return fhirjson.join_members(members)


def insert_new(pendings: list[Pending], now: datetime | None = None) -> list[Resource]:
    """Create version 1 of each resource, with history and indexes, in bulk."""
    now = now or timezone.now()
    rows, values = [], []
    for pending in pendings:
        refuse_server_written(pending.resource_type)
        row = Resource(resource_type=pending.resource_type, logical_id=pending.logical_id, version_id=1,
                       last_updated=now, text=stamp(pending, version_id=1, last_updated=now))
        values.append(_derive_patient(row, pending))
        rows.append(row)
    _assign_owners(rows, pendings)
    Resource.objects.bulk_create(rows)
    ledger_mirror.patients_written(rows)
    _store_versions(rows, [p.method for p in pendings])
    write_indexes(rows, values)
    ledger_mirror.consents_changed(rows)
    return rows


def replace_current(row: Resource, pending: Pending, now: datetime | None = None) -> Resource:
    """Store a new version of an existing (locked) row and rewrite its indexes."""
    refuse_server_written(pending.resource_type)
    now = now or timezone.now()
    row.version_id += 1
    row.last_updated = now
    row.deleted = False
    row.text = stamp(pending, version_id=row.version_id, last_updated=now)
    previous_patient = row.patient_id
    values = _derive_patient(row, pending)
    previous_owner = row.organization_id
    _assign_owners([row], [pending])
    row.save(update_fields=["version_id", "last_updated", "deleted", "text", "organization_id", "patient_id"])
    ledger_mirror.patients_written([row])
    if row.resource_type == "Patient" and row.organization_id != previous_owner:
        # The hospital managing a patient owns the patient's whole compartment.
        Resource.objects.filter(patient_id=row.logical_id).exclude(pk=row.pk).update(
            organization_id=row.organization_id)
        ResourceVersion.objects.filter(resource__patient_id=row.logical_id, patient_id=row.logical_id).update(
            organization_id=row.organization_id)
        ledger_mirror.patient_moved(row)
    _store_versions([row], [pending.method])
    clear_indexes([row.pk])
    write_indexes([row], [values])
    ledger_mirror.consents_changed([row], previous_patient)
    return row


def _derive_patient(row: Resource, pending: Pending) -> IndexValues:
    """Index values of the stamped resource; they also say whose compartment holds it."""
    values = extract_index_values(pending.parsed)
    if row.resource_type == "Patient":
        row.patient_id = row.logical_id
    else:
        row.patient_id = compartment_patient(row.resource_type, values)
    return values


def _assign_owners(rows: list[Resource], pendings: list[Pending]) -> None:
    """Set the managing organization (hospital) that owns each row.

    A Patient belongs to the owner of its managingOrganization (``ehr.ownership``: the
    account organization whose Organization it is or is ``partOf``), else to the
    organization that wrote it; an Organization, Location, HealthcareService,
    PractitionerRole or Endpoint likewise to the owner of the Organization it names. A
    reference to an Organization nobody here owns leaves the raw id (a Patient) or the writer
    (the others): ``ehr.rules`` then refuses what the writer may not reference.

    A resource in a patient's compartment belongs to that patient's organization, and the
    patient must exist: a record written for a patient id nobody has registered yet would
    otherwise belong to its writer, who could so stake out (and plant Consents in) the
    compartment of a patient another hospital registers later under that id. Anything
    else belongs to the organization that wrote it. One query for all the patients of a batch.
    """
    organization_owners = _organization_owners(rows, pendings)
    patient_owners = {}
    for row, pending in zip(rows, pendings):
        managing = ownership.owning_reference(row.resource_type, pending.parsed)
        owner = _visible_owner(organization_owners, managing, pending.organization_id)
        if row.resource_type == "Patient":
            raw = None if pending.organization_id else managing
            row.organization_id = owner or raw or row.organization_id or pending.organization_id
            patient_owners[row.logical_id] = row.organization_id
        elif row.resource_type in ownership.OWNING_ELEMENT:
            row.organization_id = owner or row.organization_id or pending.organization_id
    patient_owners.update(_stored_patient_owners({row.patient_id for row in rows} - set(patient_owners)))
    for row, pending in zip(rows, pendings):
        if row.resource_type == "Patient":
            continue
        if row.patient_id and row.patient_id not in patient_owners:
            _patient_missing(row)
        row.organization_id = (patient_owners.get(row.patient_id) or row.organization_id
                               or pending.organization_id)


def _visible_owner(owners: dict[str, str | None], managing: str | None, writer: str | None) -> str | None:
    """The owner of the named Organization, unless that would reveal a hidden one.

    An organization of the node owns itself (``owners[x] == x``) and is public: naming
    another's makes the record that organization's, which ``ehr.rules`` refuses (403). A
    resource the writer cannot see (another hospital's lab) leaves the record the writer's,
    exactly as a missing one does, and ``ehr.references`` refuses both the same (422).
    """
    owner = owners.get(managing) if managing else None
    if writer and owner not in (None, writer) and owner != managing:
        return None
    return owner


def _organization_owners(rows: list[Resource], pendings: list[Pending]) -> dict[str, str | None]:
    """Owners of the Organizations these rows name, the ones written in this batch included."""
    named = {ownership.owning_reference(row.resource_type, pending.parsed) for row, pending in zip(rows, pendings)}
    named.discard(None)
    if not named:
        return {}
    written = {row.logical_id: ownership.owning_reference("Organization", pending.parsed)
               for row, pending in zip(rows, pendings) if row.resource_type == "Organization"}
    fallback = {row.logical_id: row.organization_id or pending.organization_id
                for row, pending in zip(rows, pendings) if row.resource_type == "Organization"}
    owners: dict[str, str | None] = dict(ownership.organization_owners(named - set(written)))
    if written:
        owners.update(ownership.batch_owners(written, fallback))
    return owners


def _stored_patient_owners(patient_ids: set[str | None]) -> dict[str, str | None]:
    """Owners of the live (not deleted) Patients among these ids."""
    wanted = {p for p in patient_ids if p}
    if not wanted:
        return {}
    stored = Resource.objects.filter(resource_type="Patient", logical_id__in=wanted, deleted=False)
    return dict(stored.values_list("logical_id", "organization_id"))


def _patient_missing(row: Resource) -> None:
    awaiting = _awaiting_patients.get()
    if awaiting is None:
        raise patient_not_writable(row.resource_type, row.patient_id)
    awaiting.append(row)


@contextmanager
def patients_settled_at_end() -> Iterator[None]:
    """Let a transaction Bundle write records before the Patient they belong to (a PUT comes
    after the POSTs); at its end every such patient must exist and belong to the writer, who
    owns those records already. A Patient that another hospital registered meanwhile (committed
    while the Bundle ran) is refused like one that does not exist, never adopted."""
    token = _awaiting_patients.set([])
    try:
        yield
        awaiting = _awaiting_patients.get()
    finally:
        _awaiting_patients.reset(token)
    owners = _stored_patient_owners({row.patient_id for row in awaiting})
    for row in awaiting:
        if row.patient_id not in owners or owners[row.patient_id] != row.organization_id:
            _patient_missing(row)


def compartment_patient(resource_type: str, values: IndexValues) -> str | None:
    """The Patient whose compartment holds a resource (official R4 compartment definition)."""
    patients = {}
    for reference in values.references:
        if reference.target_type == "Patient" and reference.target_id:
            patients.setdefault(reference.param, reference.target_id)
    # The definition's order of parameters decides (subject before performer): a secondary
    # Patient reference never takes a record out of its subject's compartment.
    return next((patients[code] for code in patient_compartment(resource_type) if code in patients), None)


def mark_deleted(row: Resource, now: datetime | None = None) -> Resource:
    refuse_server_written(row.resource_type)
    row.version_id += 1
    row.last_updated = now or timezone.now()
    row.deleted = True
    row.text = ""
    row.save(update_fields=["version_id", "last_updated", "deleted", "text"])
    ledger_mirror.patient_deleted(row)
    _store_versions([row], ["DELETE"])
    clear_indexes([row.pk])
    ledger_mirror.consents_changed([row], row.patient_id)
    return row


def write_indexes(rows: list[Resource], values_of_rows: list[IndexValues]) -> None:
    """Index rows of every resource, one COPY per table (no model instances on this hot path)."""
    for kind, model in INDEX_MODELS.items():
        batch = [(row.pk, row.resource_type, value)
                 for row, values in zip(rows, values_of_rows)
                 for value in getattr(values, VALUE_LISTS[kind])]
        if not batch:
            continue
        names = [f.name for f in fields(batch[0][2])]
        try:
            copy_rows(model, ["resource_id", "resource_type", *names],
                      ((pk, resource_type, *(getattr(value, name) for name in names))
                       for pk, resource_type, value in batch))
        except (DataError, psycopg.DataError):  # COPY runs on psycopg's cursor: its own errors
            raise unindexable(batch) from None


def unindexable(batch: list[tuple]) -> FhirError:
    """A value PostgreSQL refused to index, as a 422 naming the elements, never a 500.

    None should reach here (``ehr.numeric`` bounds decimals, ``ehr.indexing`` texts); the
    message names the search parameters' elements, never the values (they may be personal).
    """
    expressions = []
    for resource_type, param in sorted({(resource_type, value.param) for _, resource_type, value in batch}):
        definition = search_params(resource_type).get(param)
        expressions.append((definition and definition.expression) or f"{resource_type}.{param}")
    message = "A value cannot be indexed for search: " + "; ".join(expressions)
    return FhirError(422, "processing", message,
                     issues=[issue("error", "processing", message, expression) for expression in expressions])


def copy_rows(model, columns: list[str], rows: Iterable[tuple]) -> None:
    """COPY rows into a model's table, in the current transaction."""
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(column) for column in columns)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def clear_indexes(resource_pks: list[int]) -> None:
    for model in INDEX_MODELS.values():
        model.objects.filter(resource_id__in=resource_pks).delete()


def _store_versions(rows: list[Resource], methods: list[str]) -> None:
    subscription_outbox.versions_stored(rows)  # in this transaction: the notification outbox
    copy_rows(ResourceVersion, ["resource_id", "resource_type", "logical_id", "version_id", "last_updated",
                                "deleted", "method", "text", "patient_id", "organization_id"],
              ((row.pk, row.resource_type, row.logical_id, row.version_id, row.last_updated, row.deleted,
                method, row.text, row.patient_id, row.organization_id) for row, method in zip(rows, methods)))
