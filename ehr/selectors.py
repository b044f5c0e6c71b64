"""Reads that are not searches: read, vread, history (instance, type, system) and $everything."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db.models import Exists, OuterRef, Q, QuerySet

from ehr.fhir import FhirError, require_resource_type
from ehr.models import ReferenceIndex, Resource, ResourceVersion, TokenIndex
from ehr.searchparams import patient_compartment, resource_types

HISTORY_DEFAULT_COUNT = 50
HISTORY_MAX_COUNT = 500


def resource_read(*, resource_type: str, logical_id: str) -> Resource:
    require_resource_type(resource_type)
    row = Resource.objects.filter(resource_type=resource_type, logical_id=logical_id).first()
    return resource_present(row, resource_type=resource_type, logical_id=logical_id)


def resource_present(row: Resource | None, *, resource_type: str, logical_id: str) -> Resource:
    """The row of a read, or 404 when there is none and 410 when it is deleted."""
    if row is None:
        raise FhirError(404, "not-found", f"{resource_type}/{logical_id} is not known")
    if row.deleted:
        raise FhirError(410, "deleted", f"{resource_type}/{logical_id} has been deleted",
                        headers={"ETag": f'W/"{row.version_id}"'})
    return row


def resource_vread(*, resource_type: str, logical_id: str, version_id: str) -> ResourceVersion:
    require_resource_type(resource_type)
    version = ResourceVersion.objects.filter(
        resource_type=resource_type, logical_id=logical_id,
        version_id=int(version_id) if version_id.isascii() and version_id.isdigit() and len(version_id) < 10 else -1,
    ).first()
    if version is None:
        raise FhirError(404, "not-found", f"{resource_type}/{logical_id}/_history/{version_id} is not known")
    if version.deleted:
        raise FhirError(410, "deleted", f"Version {version_id} of {resource_type}/{logical_id} is a deletion")
    return version


@dataclass
class HistoryPage:
    versions: list[ResourceVersion]
    total: int
    offset: int
    count: int


def history(*, resource_type: str | None = None, logical_id: str | None = None,
            since: datetime | None = None, offset: int = 0,
            count: int = HISTORY_DEFAULT_COUNT, visible: Q | None = None) -> HistoryPage:
    """Versions newest first; the instance level also answers 404 for an unknown resource.

    ``visible`` (a Q on Resource; versions have the same compartment and owner columns) hides
    the versions the caller may not see.
    """
    versions: QuerySet = ResourceVersion.objects.all()
    if visible is not None:
        versions = versions.filter(visible)  # each version by its own compartment and owner
    if resource_type:
        require_resource_type(resource_type)
        versions = versions.filter(resource_type=resource_type)
    if logical_id:
        versions = versions.filter(logical_id=logical_id)
        if not versions.exists():
            raise FhirError(404, "not-found", f"{resource_type}/{logical_id} is not known")
    if since:
        versions = versions.filter(last_updated__gte=since)
    count = max(0, min(count, HISTORY_MAX_COUNT))
    page = list(versions.order_by("-last_updated", "-id")[offset:offset + count])
    return HistoryPage(versions=page, total=versions.count(), offset=offset, count=count)


def patient_everything(*, logical_id: str, offset: int = 0, count: int = HISTORY_DEFAULT_COUNT,
                       visible: Q | None = None) -> tuple[list[Resource], int]:
    """The Patient and every current resource in its compartment (official R4 definition).

    ``visible`` (the caller's access filter) applies to the page and the total.
    """
    patient = resource_read(resource_type="Patient", logical_id=logical_id)
    linked = ReferenceIndex.objects.filter(
        _compartment_links(), resource_id=OuterRef("pk"), target_type="Patient", target_id=logical_id
    )
    members = Resource.objects.filter(Q(pk=patient.pk) | Q(Exists(linked)), deleted=False)
    if visible is not None:
        members = members.filter(visible)
    count = max(0, min(count, HISTORY_MAX_COUNT))
    page = list(members.order_by("resource_type", "id")[offset:offset + count])
    return page, members.count()


@cache
def _compartment_links() -> Q:
    """Index rows that put a resource in a Patient's compartment: (type, parameter) pairs."""
    links = Q()
    for resource_type in resource_types():
        codes = patient_compartment(resource_type)
        if codes:
            links |= Q(resource_type=resource_type, param__in=codes)
    return links


def resource_ids_existing(*, resource_type: str, logical_ids: list[str]) -> set[str]:
    """Which of these ids of one type are stored (current or deleted)."""
    if not logical_ids:
        return set()
    return set(Resource.objects.filter(resource_type=resource_type, logical_id__in=logical_ids)
               .values_list("logical_id", flat=True))


def resource_owned_exists(*, resource_type: str, logical_id: str, organization_id: str) -> bool:
    """A current resource of this id owned by this organization."""
    return Resource.objects.filter(resource_type=resource_type, logical_id=logical_id,
                                   organization_id=organization_id, deleted=False).exists()


def patients_by_identifier_statement(keys: set[tuple[str, str]], organization_id: str) -> tuple[str, list]:
    """SQL and parameters: an organization's current Patients carrying each (system, value), newest first.

    A statement rather than rows so that imaging's study ingest sends it in the same round
    trip as its own lookups and locks; ``patients_by_identifier_found`` reads its rows.
    """
    token, resource = TokenIndex._meta, Resource._meta

    def column(meta, name: str) -> str:
        return '"' + meta.get_field(name).column + '"'

    values = sorted({value for _, value in keys})
    sql = (f'SELECT t.{column(token, "system")}, t.{column(token, "code")}, r.{column(resource, "logical_id")} '
           f'FROM "{token.db_table}" t JOIN "{resource.db_table}" r ON r."id" = t.{column(token, "resource")} '
           f"WHERE t.{column(token, 'resource_type')} = 'Patient' AND t.{column(token, 'param')} = 'identifier' "
           f"AND t.{column(token, 'code')} IN (SELECT json_array_elements_text(%s::json)) "
           f"AND (t.{column(token, 'system')}, t.{column(token, 'code')}) IN "
           f"(SELECT k ->> 0, k ->> 1 FROM json_array_elements(%s::json) AS k) "
           f"AND r.{column(resource, 'organization_id')} = %s AND NOT r.{column(resource, 'deleted')} "
           f"ORDER BY t.{column(token, 'resource')} DESC")
    return sql, [json.dumps(values), json.dumps([list(key) for key in sorted(keys)]), organization_id]


def patients_by_identifier_found(rows) -> dict[tuple[str, str], str]:
    """The Patient id for each (system, value) from the statement's rows; the oldest Patient wins."""
    patients: dict[tuple[str, str], str] = {}
    for system, code, logical_id in rows:  # newest first: the oldest wins
        patients[(system, code)] = logical_id
    return patients
