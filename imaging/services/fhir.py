"""The FHIR side of a study: its ImagingStudy (and the organization's DICOMweb Endpoint).

Rewritten once per STOW-RS request or DIMSE association, not once per instance, so a study
of a thousand images is not a thousand resource versions.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.db import transaction

from ehr.models import Resource
from ehr.selectors import resource_ids_existing, resource_owned_exists
from ehr.services import resource_owner_claim, resource_update, resources_create_with_ids
from imaging import fhirmap
from imaging.models import Instance, Series, Study

from .locks import advisory_locks, study_lock


def study_sync_fhir(*, study_ids: list[int] | set[int]) -> list[Resource]:
    """Rewrite the ImagingStudy of each study from its rows (one new version per study).

    Studies are locked, so a sync and a store (or two syncs) of one study never interleave;
    DIMSE calls this when an association ends, and the SCP for stale studies when it starts.
    """
    with transaction.atomic(savepoint=False):
        # The same per-study locks as instances_store: a sync never reads a study mid-store.
        owned = Study.objects.filter(pk__in=list(study_ids)).values_list("organization_id", "study_instance_uid")
        advisory_locks([study_lock(organization_id, uid) for organization_id, uid in owned])
        studies = list(Study.objects.filter(pk__in=list(study_ids)).order_by("pk"))
        written = imaging_studies_write(studies, new=set())
        Study.objects.filter(pk__in=[study.pk for study in studies]).update(fhir_stale=False)
    return written


def imaging_studies_write(studies: list[Study], *, new: set[int],
                          contents: tuple[dict, dict] | None = None) -> list[Resource]:
    """Write each study's ImagingStudy (studies in ``new`` are known to have none yet).

    ``contents`` may give the series (by study) and instances (by series) of the studies in
    ``new``, in display order; the others' are read. Creates each organization's DICOMweb
    Endpoint the first time. ImagingStudies that do not exist yet are validated one by one
    and inserted together (``ehr.services.storage``: one statement per table for all of
    them, with versions, indexes and owners as any create).
    """
    endpoints = {org: _endpoint_ensure(org) for org in {study.organization_id for study in studies}}
    known = new if contents is not None else set()
    unknown = [study.pk for study in studies if study.pk not in known]
    series_of, instances_of = _contents(unknown) if unknown else ({}, {})
    if contents is not None:
        series_of.update(contents[0])
        instances_of.update(contents[1])
    maybe = [study.fhir_id for study in studies if study.pk not in new]
    existing = resource_ids_existing(resource_type="ImagingStudy", logical_ids=maybe)
    written, pending = [], []
    for study in sorted(studies, key=lambda row: row.pk):
        resource = fhirmap.imaging_study_resource(
            study=study, series=series_of.get(study.pk, []), instances_by_series=instances_of,
            endpoint=endpoints[study.organization_id])
        text = json.dumps(resource)
        if study.fhir_id in existing:
            written.append(resource_update(resource_type="ImagingStudy", logical_id=study.fhir_id, text=text,
                                           organization_id=study.organization_id).resource)
        else:
            pending.append((study.fhir_id, text, study.organization_id))
    written.extend(resources_create_with_ids(resource_type="ImagingStudy", items=pending))
    return written


def _contents(study_ids: list[int]) -> tuple[dict[int, list[Series]], dict[int, list[Instance]]]:
    """Series by study and instances by series, in display order (two queries for all studies)."""
    series_of: dict[int, list[Series]] = {}
    for row in Series.objects.filter(study_id__in=study_ids).order_by("series_number", "pk"):
        series_of.setdefault(row.study_id, []).append(row)
    instances_of: dict[int, list[Instance]] = {}
    rows = (Instance.objects.filter(study_id__in=study_ids).order_by("instance_number", "pk")
            .only("pk", "series_id", "sop_instance_uid", "sop_class_uid", "instance_number"))
    for row in rows:
        instances_of.setdefault(row.series_id, []).append(row)
    return series_of, instances_of


def study_sync_stale() -> int:
    """Sync every study marked stale (an SCP that stopped mid-association left them so)."""
    ids = list(Study.objects.filter(fhir_stale=True).values_list("pk", flat=True))
    for start in range(0, len(ids), 100):
        study_sync_fhir(study_ids=ids[start:start + 100])
    return len(ids)


# Endpoints seen stored (committed) by this process; they are never deleted by the imaging app.
_ENDPOINTS_SEEN: set[str] = set()


def _endpoint_ensure(organization_id: str) -> str:
    logical_id = fhirmap.endpoint_id(organization_id)
    if logical_id in _ENDPOINTS_SEEN:
        return logical_id
    if resource_owned_exists(resource_type="Endpoint", logical_id=logical_id, organization_id=organization_id):
        _ENDPOINTS_SEEN.add(logical_id)
    else:  # missing, or a squatter's from before these ids were reserved: the server's own replaces it
        resource = fhirmap.endpoint_resource(logical_id=logical_id, address=settings.DICOMWEB_BASE_URL)
        written = resource_update(resource_type="Endpoint", logical_id=logical_id, text=json.dumps(resource),
                                  organization_id=organization_id).resource
        resource_owner_claim(row=written, organization_id=organization_id)
    return logical_id
