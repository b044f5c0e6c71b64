"""Reads that are not searches: read, vread, history (instance, type, system) and $everything."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cache

from django.db.models import Exists, OuterRef, Q, QuerySet

from ehr.fhir import FhirError, require_resource_type
from ehr.models import ReferenceIndex, Resource, ResourceVersion
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
