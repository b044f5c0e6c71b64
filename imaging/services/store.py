"""Store instances: rows and files in one transaction, serialized per SOP Instance UID.

The same UID stored twice is either the same content (nothing changes) or a reported
conflict; a refused instance leaves no row and no file.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from ehr.models import TokenIndex
from ehr.services import resource_create
from imaging import dicomjson, fhirmap
from imaging.blobs import blob_put, instance_key
from imaging.models import Instance, Series, Study
from imaging.reading import (
    DUPLICATE_SOP_INSTANCE,
    NOT_AUTHORIZED,
    PROCESSING_FAILURE,
    IncomingInstance,
    InstanceRefused,
    dicom_date,
)

from .deid import deidentify_queue
from .fhir import imaging_studies_write
from .locks import advisory_locks

STORED = "stored"
ALREADY_STORED = "already-stored"  # same UID, same content: nothing written
CONFLICT = "conflict"  # same UID, different content: nothing written, reported


@dataclass
class StoreOutcome:
    instance: Instance
    result: str

    @property
    def study(self) -> Study:
        return self.instance.study


def instance_store(*, incoming: IncomingInstance, organization_id: str) -> StoreOutcome:
    """Store one checked instance (a C-STORE); raise ``InstanceRefused`` if it cannot be."""
    [result] = instances_store(incoming=[incoming], organization_id=organization_id)
    if isinstance(result, InstanceRefused):
        raise result
    return result


def instances_store(*, incoming: list[IncomingInstance], organization_id: str,
                    sync_fhir: bool = False) -> list[StoreOutcome | InstanceRefused]:
    """Store checked instances for an organization in one transaction (a STOW-RS request).

    Returns, in input order, each instance's outcome or its refusal. A refused instance
    leaves no row and no file; the others are stored together: rows in a few bulk
    statements under per-UID advisory locks, then the files. With ``sync_fhir`` the
    ImagingStudy of every study that received an instance is rewritten in the same
    transaction; without it (DIMSE) those studies are marked stale for ``study_sync_fhir``.
    De-identified copies are queued after commit when ``IMAGING_DEIDENTIFY_ON_INGEST`` is on.
    """
    results: list[StoreOutcome | InstanceRefused | None] = [None] * len(incoming)
    # No savepoint: refusals are decided before writing, anything else fails the caller's transaction.
    with transaction.atomic(savepoint=False):
        advisory_locks([f"imaging-sop:{item.sop_instance_uid}" for item in incoming]
                  + [f"imaging-study:{item.study_instance_uid}" for item in incoming])
        fresh = _resolve_existing(incoming, organization_id, results)
        studies = _studies_for([incoming[i] for i in fresh], organization_id, synced=sync_fhir)
        series = _series_for([incoming[i] for i in fresh], studies)
        rows = []
        for index in fresh:
            item = incoming[index]
            refusal = _refusal(item, studies, series, organization_id)
            if refusal is not None:
                results[index] = refusal
                continue
            rows.append((index, _instance_row(studies[item.study_instance_uid],
                                              series[item.series_instance_uid], item)))
        created = Instance.objects.bulk_create([row for _, row in rows])
        touched = {row.study_id: row.study for row in created}
        if sync_fhir and touched:
            new = {study.pk for study in studies.values() if study.fhir_new}
            imaging_studies_write(list(touched.values()), new=new)
            _mark_synced({pk for pk, study in touched.items() if study.fhir_stale and pk not in new})
        elif not sync_fhir:
            _mark_stale({pk for pk, study in touched.items() if not study.fhir_stale})
        for (index, _), row in zip(rows, created):
            blob_put(key=row.storage_key, data=incoming[index].data)
            results[index] = StoreOutcome(row, STORED)
        if created and settings.IMAGING_DEIDENTIFY_ON_INGEST:
            ids = [row.pk for row in created]
            transaction.on_commit(lambda: deidentify_queue(ids), robust=True)
    for index, result in enumerate(results):
        if isinstance(result, _RepeatOf):
            results[index] = result.outcome(results[result.earlier])
    return results


def _resolve_existing(incoming: list[IncomingInstance], organization_id: str, results: list) -> list[int]:
    """Fill in the outcome of UIDs already stored (or repeated in the batch); the rest's indexes."""
    stored = {row.sop_instance_uid: row for row in Instance.objects.select_related("study").filter(
        sop_instance_uid__in={item.sop_instance_uid for item in incoming})}
    first_in_batch: dict[str, int] = {}
    fresh = []
    for index, item in enumerate(incoming):
        row = stored.get(item.sop_instance_uid)
        earlier = first_in_batch.setdefault(item.sop_instance_uid, index)
        if row is not None:
            results[index] = _existing_outcome(row, item, organization_id)
        elif earlier != index:
            results[index] = _RepeatOf(earlier, incoming[earlier].content_sha256 == item.content_sha256, item)
        else:
            fresh.append(index)
    return fresh


@dataclass
class _RepeatOf:
    """An instance sent twice in one batch; its outcome follows the first copy's."""

    earlier: int
    same: bool
    item: IncomingInstance

    def outcome(self, first):
        if not self.same:
            return InstanceRefused(DUPLICATE_SOP_INSTANCE, "Two different instances with one SOP Instance UID",
                                   sop_class_uid=self.item.sop_class_uid,
                                   sop_instance_uid=self.item.sop_instance_uid)
        return StoreOutcome(first.instance, ALREADY_STORED) if isinstance(first, StoreOutcome) else first


def _existing_outcome(row: Instance, item: IncomingInstance, organization_id: str):
    if row.study.organization_id != organization_id:
        return InstanceRefused(NOT_AUTHORIZED, "The study belongs to another organization",
                               sop_class_uid=item.sop_class_uid, sop_instance_uid=item.sop_instance_uid)
    return StoreOutcome(row, ALREADY_STORED if row.content_sha256 == item.content_sha256 else CONFLICT)


def _refusal(item: IncomingInstance, studies: dict, series: dict, organization_id: str):
    study = studies[item.study_instance_uid]
    reason = None
    if study.organization_id != organization_id:
        reason = InstanceRefused(NOT_AUTHORIZED, "The study belongs to another organization")
    elif series[item.series_instance_uid].study_id != study.pk:
        reason = InstanceRefused(PROCESSING_FAILURE, "The series is stored under another study")
    if reason is not None:
        reason.sop_class_uid, reason.sop_instance_uid = item.sop_class_uid, item.sop_instance_uid
    return reason


def _studies_for(incoming: list[IncomingInstance], organization_id: str, *, synced: bool) -> dict[str, Study]:
    """The Study row of each study UID, created (with its Patient link) when new.

    ``fhir_new`` (not a column) tells which rows were created here; with ``synced`` they are
    created up to date, their ImagingStudy being written in this same transaction.
    """
    uids = {item.study_instance_uid for item in incoming}
    studies = {row.study_instance_uid: row for row in Study.objects.filter(study_instance_uid__in=uids)}
    for row in studies.values():
        row.fhir_new = False
    firsts: dict[str, IncomingInstance] = {}
    for item in incoming:
        if item.study_instance_uid not in studies:
            firsts.setdefault(item.study_instance_uid, item)
    if not firsts:
        return studies
    patients = _patients_for(list(firsts.values()), organization_id)
    modalities: dict[str, set[str]] = {}
    for item in incoming:
        modalities.setdefault(item.study_instance_uid, set()).add(item.text("Modality", 16))
    new = [_study_row(item, organization_id, patients[item.study_instance_uid],
                      sorted(modalities[uid] - {""}), stale=not synced) for uid, item in firsts.items()]
    for row in Study.objects.bulk_create(new):
        row.fhir_new, row.fhir_stale = True, not synced
        studies[row.study_instance_uid] = row
    return studies


def _study_row(item: IncomingInstance, organization_id: str, patient_id: str, modalities: list[str],
               *, stale: bool = True) -> Study:
    return Study(modalities=modalities, fhir_stale=stale,
        study_instance_uid=item.study_instance_uid, organization_id=organization_id,
        patient_id=patient_id, fhir_id=str(uuid.uuid4()),
        dicom_patient_id=item.text("PatientID"), issuer_of_patient_id=item.text("IssuerOfPatientID"),
        patient_name=item.text("PatientName", 324), study_date=item.study_date(),
        study_time=item.text("StudyTime", 16), accession_number=item.text("AccessionNumber", 16),
        study_id=item.text("StudyID", 16), study_description=item.text("StudyDescription"),
        attributes=item.attributes(dicomjson.STUDY_TAGS),
    )


def _patients_for(firsts: list[IncomingInstance], organization_id: str) -> dict[str, str]:
    """The Patient id of each new study: the organization's Patient with the study's
    PatientID/IssuerOfPatientID, or one created (tagged) for it.

    Without a PatientID a study cannot be matched to anyone: it gets a Patient of its own.
    """
    keys = {item.study_instance_uid: _patient_key(item, organization_id) for item in firsts}
    advisory_locks([f"imaging-patient:{organization_id}|{system}|{value}" for system, value in keys.values()])
    found = _patients_found(set(keys.values()), organization_id)
    for item in firsts:
        key = keys[item.study_instance_uid]
        if key not in found:
            found[key] = _patient_create(item, key, organization_id)
    return {uid: found[key] for uid, key in keys.items()}


def _patient_key(item: IncomingInstance, organization_id: str) -> tuple[str, str]:
    value = item.text("PatientID")
    if not value:
        return "urn:dicom:uid", f"urn:oid:{item.study_instance_uid}"
    return fhirmap.patient_identifier_system(issuer=item.text("IssuerOfPatientID"),
                                             organization_id=organization_id), value


def _patients_found(keys: set[tuple[str, str]], organization_id: str) -> dict[tuple[str, str], str]:
    """The organization's current Patients carrying each identifier (the oldest when several)."""
    condition = Q()
    for system, value in keys:
        condition |= Q(system=system, code=value)
    rows = (TokenIndex.objects.filter(condition, resource_type="Patient", param="identifier",
                                      resource__organization_id=organization_id, resource__deleted=False)
            .order_by("-resource_id").values_list("system", "code", "resource__logical_id"))
    return {(system, code): logical_id for system, code, logical_id in rows}


def _patient_create(item: IncomingInstance, key: tuple[str, str], organization_id: str) -> str:
    resource = fhirmap.patient_resource(system=key[0], value=key[1], name=item.text("PatientName", 324),
                                        birth_date=dicom_date(item.text("PatientBirthDate", 16)),
                                        sex=item.text("PatientSex", 16))
    created = resource_create(resource_type="Patient", text=json.dumps(resource), organization_id=organization_id)
    return created.resource.logical_id


def _series_for(incoming: list[IncomingInstance], studies: dict[str, Study]) -> dict[str, Series]:
    """The Series row of each series UID, created when new; new modalities added to their study."""
    uids = {item.series_instance_uid for item in incoming}
    series = {row.series_instance_uid: row for row in Series.objects.filter(series_instance_uid__in=uids)}
    new: dict[str, Series] = {}
    for item in incoming:
        if item.series_instance_uid in series or item.series_instance_uid in new:
            continue
        new[item.series_instance_uid] = Series(
            study=studies[item.study_instance_uid], series_instance_uid=item.series_instance_uid,
            modality=item.text("Modality", 16), series_number=item.integer("SeriesNumber"),
            series_description=item.text("SeriesDescription"),
            attributes=item.attributes(dicomjson.SERIES_TAGS))
    for row in Series.objects.bulk_create(new.values()):
        series[row.series_instance_uid] = row
        _add_modality(row.study, row.modality)  # a new study already has its batch's modalities
    return series


def _add_modality(study: Study, modality: str) -> None:
    if modality and modality not in study.modalities:
        study.modalities = sorted({*study.modalities, modality})
        Study.objects.filter(pk=study.pk).update(modalities=study.modalities)


def _instance_row(study: Study, series: Series, item: IncomingInstance) -> Instance:
    dataset = item.dataset
    return Instance(
        study=study, series=series, sop_instance_uid=item.sop_instance_uid,
        sop_class_uid=item.sop_class_uid, transfer_syntax_uid=item.transfer_syntax_uid,
        instance_number=item.integer("InstanceNumber"),
        number_of_frames=max(1, item.integer("NumberOfFrames") or 1),
        rows=dataset.get("Rows"), columns=dataset.get("Columns"),
        content_sha256=item.content_sha256, size=len(item.data),
        storage_key=instance_key(study.study_instance_uid, item.sop_instance_uid),
        attributes=item.attributes(dicomjson.INSTANCE_LEVEL_TAGS),
    )


def _mark_synced(study_ids: set[int]) -> None:
    """Studies a DIMSE association had left stale are up to date once written here."""
    if study_ids:
        Study.objects.filter(pk__in=study_ids).update(fhir_stale=False)


def _mark_stale(study_ids: set[int]) -> None:
    if study_ids:
        Study.objects.filter(pk__in=study_ids, fhir_stale=False).update(fhir_stale=True)
