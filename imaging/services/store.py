"""Store instances: rows and files in one transaction, serialized per SOP Instance UID.

The same UID stored twice by one organization is either the same content (nothing changes)
or a reported conflict; a refused instance leaves no row and no file. UIDs are per
organization: every lookup, lock and file key here is the sender's, so a UID another
hospital holds is stored as a fresh one (its own study, series, Patient and file), with the
same answer, and the other hospital's rows and files are never read, touched or hinted at.

A request costs two round trips to PostgreSQL for its rows, whatever its size: one that
takes the advisory locks and then reads what is already stored (instances, studies,
series, the Patients of the studies' patient identifiers) and reserves row ids, and one
that inserts every new study, series and instance. Both are several statements sent
together; each statement still runs after the one before it, so the reads see what was
committed before the locks were granted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from ehr.selectors import patients_by_identifier_found, patients_by_identifier_statement
from ehr.services import resource_create
from imaging import dicomjson, fhirmap
from imaging.blobs import PendingWrites, instance_key
from imaging.models import Instance, Series, Study
from imaging.reading import (
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    IncomingInstance,
    InstanceRefused,
    dicom_date,
)

from .deid import deidentify_queue
from .fhir import imaging_studies_write
from .locks import sop_lock, study_lock

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
    leaves no row and no file; the others are stored together: rows in one round trip of
    bulk statements under per-UID advisory locks, files written and fsynced by writer
    threads meanwhile (all durable before this returns, so before commit). With ``sync_fhir`` the
    ImagingStudy of every study that received an instance is rewritten in the same
    transaction; without it (DIMSE) those studies are marked stale for ``study_sync_fhir``.
    De-identified copies are queued after commit when ``IMAGING_DEIDENTIFY_ON_INGEST`` is on.
    """
    results: list = [_oversized(item) for item in incoming]
    if not incoming:
        return results
    # No savepoint: refusals are decided before writing, anything else fails the caller's transaction.
    with transaction.atomic(savepoint=False):
        stored = _read_stored(incoming, organization_id)
        fresh = _resolve_existing(incoming, organization_id, results, stored.instances)
        plan = _Plan(stored, organization_id, synced=sync_fhir)
        accepted = []
        for index in fresh:
            refusal = plan.place(incoming[index])
            if refusal is None:
                accepted.append(index)
            else:
                results[index] = refusal
        # The files are written and fsynced while the rows are: both are done before commit.
        files = PendingWrites([(instance_key(organization_id, incoming[index].study_instance_uid,
                                             incoming[index].sop_instance_uid), incoming[index].data)
                               for index in accepted])
        try:
            created = plan.write([incoming[index] for index in accepted])
            touched = {row.study_id: row.study for row in created}
            if sync_fhir and touched:
                new = {row.pk for row in plan.new_studies}
                imaging_studies_write(list(touched.values()), new=new, contents=_contents_of(new, created))
        except BaseException:
            files.settle()
            raise
        files.wait()
        for index, row in zip(accepted, created):
            results[index] = StoreOutcome(row, STORED)
        if created and settings.IMAGING_DEIDENTIFY_ON_INGEST:
            ids = [row.pk for row in created]
            # The rows are the outbox (``deid_queued_at`` NULL): a publish that fails is the sweep's.
            transaction.on_commit(lambda: deidentify_queue(ids), robust=True)
    for index, result in enumerate(results):
        if isinstance(result, _RepeatOf):
            results[index] = result.outcome(results[result.earlier])
    return results


# --- what is stored already: one round trip -----------------------------------------------------

@dataclass
class _Stored:
    instances: dict[str, Instance]  # by SOP Instance UID, with .study and .series
    studies: dict[str, Study]
    series: dict[str, Series]
    patients: dict[tuple[str, str], str]  # (system, value) -> Patient id, for the studies' patients
    patient_keys: dict[str, tuple[str, str]]  # study UID -> its patient identifier
    ids: dict[type, list[int]]  # row ids reserved for new studies, series and instances


def _read_stored(incoming: list[IncomingInstance], organization_id: str) -> _Stored:
    """Lock the request's UIDs, then read what the organization stored under them, in one round trip.

    Locks and lookups are the organization's own: another hospital storing the same UIDs
    neither waits for this request nor is seen by it.
    """
    firsts: dict[str, IncomingInstance] = {}
    for item in incoming:
        firsts.setdefault(item.study_instance_uid, item)
    patient_keys = {uid: _patient_key(item, organization_id) for uid, item in firsts.items()}
    sop_uids = sorted({item.sop_instance_uid for item in incoming})
    series_uids = sorted({item.series_instance_uid for item in incoming})
    keys = [sop_lock(organization_id, uid) for uid in sop_uids] + [study_lock(organization_id, uid) for uid in firsts]
    patients_sql, patients_params = patients_by_identifier_statement(set(patient_keys.values()), organization_id)
    # Lists travel as JSON texts: psycopg quotes a text[] element by element in Python.
    statements = [
        (_LOCKS, [_json(keys)]),
        (f"SELECT {_columns(Instance, 'i')}, {_columns(Study, 's')}, se.series_instance_uid "
         f"FROM imaging_instance i JOIN imaging_study s ON s.id = i.study_id "
         f"JOIN imaging_series se ON se.id = i.series_id "
         f"WHERE i.organization_id = %s AND i.sop_instance_uid IN {_ELEMENTS}",
         [organization_id, _json(sop_uids)]),
        (f"SELECT {_columns(Study, 's')} FROM imaging_study s "
         f"WHERE s.organization_id = %s AND s.study_instance_uid IN {_ELEMENTS}",
         [organization_id, _json(list(firsts))]),
        (f"SELECT {_columns(Series, 'se')} FROM imaging_series se "
         f"WHERE se.organization_id = %s AND se.series_instance_uid IN {_ELEMENTS}",
         [organization_id, _json(series_uids)]),
        (patients_sql, patients_params),
        ("SELECT 's', nextval(pg_get_serial_sequence('imaging_study', 'id')) FROM generate_series(1, %s) "
         "UNION ALL SELECT 'e', nextval(pg_get_serial_sequence('imaging_series', 'id')) FROM generate_series(1, %s) "
         "UNION ALL SELECT 'i', nextval(pg_get_serial_sequence('imaging_instance', 'id')) "
         "FROM generate_series(1, %s)", [len(firsts), len(series_uids), len(incoming)]),
    ]
    with connection.cursor() as cursor:
        cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        cursor.nextset()
        study_width, instance_width = len(_FIELDS[Study]), len(_FIELDS[Instance])
        instances = {}
        for row in cursor.fetchall():
            study = _model(Study, row[instance_width:instance_width + study_width])
            instance = _model(Instance, row[:instance_width])
            instance.study = study
            instance.series = Series(pk=instance.series_id, study=study, series_instance_uid=row[-1])
            instances[instance.sop_instance_uid] = instance
        cursor.nextset()
        studies = {row.study_instance_uid: row for row in (_model(Study, values) for values in cursor.fetchall())}
        cursor.nextset()
        series = {row.series_instance_uid: row for row in (_model(Series, values) for values in cursor.fetchall())}
        cursor.nextset()
        patients = patients_by_identifier_found(cursor.fetchall())
        cursor.nextset()
        ids: dict[type, list[int]] = {Study: [], Series: [], Instance: []}
        for kind, value in cursor.fetchall():
            ids[{"s": Study, "e": Series, "i": Instance}[kind]].append(value)
    return _Stored(instances, studies, series, patients, patient_keys, ids)


_ELEMENTS = "(SELECT json_array_elements_text(%s::json))"
# Transaction-scoped advisory locks on a JSON list of keys, taken in one sorted order (the
# same order as ``imaging.services.locks``), so two transactions never wait in a cycle.
_LOCKS = ("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
          "FROM (SELECT DISTINCT k FROM json_array_elements_text(%s::json) AS k ORDER BY k) AS keys")


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# Every column but the JSON attributes (not needed to store, and left unread).
_FIELDS = {model: [field for field in model._meta.concrete_fields if field.name != "attributes"]
           for model in (Study, Series, Instance)}


def _columns(model, alias: str) -> str:
    return ", ".join(f'{alias}."{field.column}"' for field in _FIELDS[model])


def _model(model, values):
    return model.from_db("default", [field.attname for field in _FIELDS[model]], values)


# --- what to write: decided in Python, written in one round trip ------------------------------

class _Plan:
    """The rows a request adds: new studies, series and instances, and the studies it changes."""

    def __init__(self, stored: _Stored, organization_id: str, *, synced: bool) -> None:
        self.stored = stored
        self.organization_id = organization_id
        self.synced = synced
        self.now = timezone.now()
        self.studies = dict(stored.studies)
        self.series = dict(stored.series)
        self.firsts: dict[str, IncomingInstance] = {}  # new study UID -> its first accepted instance
        self.modalities: dict[str, set[str]] = {}  # new study UID -> modalities of its instances
        self.new_series: dict[str, tuple[str, IncomingInstance]] = {}  # UID -> (study UID, first instance)
        self.new_studies: list[Study] = []

    def place(self, item: IncomingInstance) -> InstanceRefused | None:
        """Accept an instance into its study and series, or say why it cannot go there."""
        study_uid, series_uid = item.study_instance_uid, item.series_instance_uid
        study = self.studies.get(study_uid)
        reason = None
        if series_uid in self.series:
            if study is None or self.series[series_uid].study_id != study.pk:
                reason = InstanceRefused(PROCESSING_FAILURE, "The series is stored under another study")
        elif series_uid in self.new_series and self.new_series[series_uid][0] != study_uid:
            reason = InstanceRefused(PROCESSING_FAILURE, "The series is stored under another study")
        if reason is not None:
            reason.sop_class_uid, reason.sop_instance_uid = item.sop_class_uid, item.sop_instance_uid
            return reason
        if series_uid in self.series:
            self.series[series_uid].study = study  # the same row: no query when the answer names it
        if study is None:
            self.firsts.setdefault(study_uid, item)
            self.modalities.setdefault(study_uid, set()).add(item.text("Modality", 16))
        if series_uid not in self.series:
            self.new_series.setdefault(series_uid, (study_uid, item))
        return None

    def write(self, items: list[IncomingInstance]) -> list[Instance]:
        """Insert the new studies, series and instances; returns the instances, in order."""
        if not items:
            return []
        ids = self.stored.ids
        patients = self._patients()
        for uid, item in self.firsts.items():
            study = _study_row(item, self.organization_id, patients[uid], sorted(self.modalities[uid] - {""}),
                               stale=not self.synced)
            study.pk, study.created, study.updated = ids[Study].pop(0), self.now, self.now
            self.studies[uid] = study
            self.new_studies.append(study)
        new_series = []
        changed: dict[int, Study] = {}
        new_pks = {row.pk for row in self.new_studies}
        for uid, (study_uid, item) in self.new_series.items():
            study = self.studies[study_uid]
            row = Series(pk=ids[Series].pop(0), study=study, organization_id=study.organization_id,
                         series_instance_uid=uid, created=self.now,
                         modality=item.text("Modality", 16), series_number=item.integer("SeriesNumber"),
                         series_description=item.text("SeriesDescription"),
                         attributes=item.attributes(dicomjson.SERIES_TAGS))
            self.series[uid] = row
            new_series.append(row)
            if study.pk not in new_pks and row.modality and row.modality not in study.modalities:
                study.modalities = sorted({*study.modalities, row.modality})
                changed[study.pk] = study
        created = []
        for item in items:
            row = _instance_row(self.studies[item.study_instance_uid], self.series[item.series_instance_uid], item)
            row.pk, row.created = ids[Instance].pop(0), self.now
            created.append(row)
        statements = [_insert(Study, self.new_studies), _insert(Series, new_series), _insert(Instance, created)]
        statements.extend(self._study_updates(changed, {row.study_id: row.study for row in created}))
        statements = [statement for statement in statements if statement is not None]
        with connection.cursor() as cursor:
            cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        return created

    def _patients(self) -> dict[str, str]:
        """The Patient id of each new study: the organization's Patient with the study's
        PatientID/IssuerOfPatientID, or one created (tagged) for it.

        Without a PatientID a study cannot be matched to anyone: it gets a Patient of its own.
        A Patient found by the first read is used as it is. Only identifiers without one are
        locked (after the UIDs, always in that order), looked up again and created if still
        missing, so concurrent requests for one patient create it once and requests for known
        patients never wait for each other.
        """
        found = self.stored.patients
        keys = {self.stored.patient_keys[uid] for uid in self.firsts}
        missing = sorted(keys - set(found))
        if missing:
            locks = [f"imaging-patient:{self.organization_id}|{system}|{value}" for system, value in missing]
            sql, params = patients_by_identifier_statement(set(missing), self.organization_id)
            with connection.cursor() as cursor:
                cursor.execute(f"{_LOCKS}; {sql}", [_json(locks), *params])
                cursor.nextset()
                found.update(patients_by_identifier_found(cursor.fetchall()))
        out = {}
        for uid, item in self.firsts.items():
            key = self.stored.patient_keys[uid]
            if key not in found:
                found[key] = _patient_create(item, key, self.organization_id)
            out[uid] = found[key]
        return out

    def _study_updates(self, changed: dict[int, Study], touched: dict[int, Study]) -> list[tuple[str, list]]:
        """New modalities of stored studies, and their ImagingStudy flag (written now or due)."""
        new = {row.pk for row in self.new_studies}
        flags = {}
        for pk, study in touched.items():
            if pk in new:
                continue
            if self.synced and study.fhir_stale:  # a DIMSE association had left it stale
                study.fhir_stale = False
                flags[pk] = study
            elif not self.synced and not study.fhir_stale:
                study.fhir_stale = True
                flags[pk] = study
        rows = {**changed, **flags}
        if not rows:
            return []
        values = ", ".join("(%s, %s::varchar(16)[], %s)" for _ in rows)
        params = [p for study in rows.values() for p in (study.pk, study.modalities, study.fhir_stale)]
        return [(f"UPDATE imaging_study SET modalities = v.modalities, fhir_stale = v.stale, updated = %s "
                 f"FROM (VALUES {values}) AS v(id, modalities, stale) WHERE imaging_study.id = v.id",
                 [self.now, *params])]


def _contents_of(new: set[int], created: list[Instance]) -> tuple[dict, dict]:
    """Series by study and instances by series of the new studies, in display order.

    All of a new study's series and instances came with this request: no query needed.
    """
    series_of: dict[int, dict[int, Series]] = {}
    instances_of: dict[int, list[Instance]] = {}
    for row in created:
        if row.study_id in new:
            series_of.setdefault(row.study_id, {})[row.series_id] = row.series
            instances_of.setdefault(row.series_id, []).append(row)
    ordered = {pk: sorted(rows.values(), key=lambda row: (row.series_number is None, row.series_number or 0, row.pk))
               for pk, rows in series_of.items()}
    for rows in instances_of.values():
        rows.sort(key=lambda row: (row.instance_number is None, row.instance_number or 0, row.pk))
    return ordered, instances_of


def _insert(model, rows: list) -> tuple[str, list] | None:
    """One INSERT of these rows with their ids (from ``nextval``), every column as the model says.

    The rows travel as one JSON parameter (``json_populate_recordset``): the statement's text
    and its one placeholder are the same whatever the number of rows, which keeps psycopg's
    client-side binding cheap, and ``json.dumps`` is the only per-value work in Python.
    """
    if not rows:
        return None
    table = model._meta.db_table
    columns = ", ".join(f'"{field.column}"' for field in model._meta.concrete_fields)
    values = [{field.column: _json_value(getattr(row, field.attname)) for field in model._meta.concrete_fields}
              for row in rows]
    return (f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM json_populate_recordset(NULL::"{table}", %s)',
            [json.dumps(values, separators=(",", ":"))])


def _json_value(value):
    return value.isoformat() if isinstance(value, date | datetime) else value


def _resolve_existing(incoming: list[IncomingInstance], organization_id: str, results: list,
                      stored: dict[str, Instance]) -> list[int]:
    """Fill in the outcome of UIDs already stored (or repeated in the batch); the rest's indexes."""
    first_in_batch: dict[str, int] = {}
    fresh = []
    for index, item in enumerate(incoming):
        if results[index] is not None:  # refused before any lookup (``_oversized``)
            continue
        row = stored.get(item.sop_instance_uid)
        earlier = first_in_batch.setdefault(item.sop_instance_uid, index)
        if row is not None:
            results[index] = _existing_outcome(row, item)
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


def _oversized(item: IncomingInstance) -> InstanceRefused | None:
    """Refuse a decompression bomb: pixels declared above ``DICOM_MAX_PIXEL_BYTES_PER_INSTANCE``.

    Every reader of a stored instance (rendering, frames, de-identification) decodes what the
    header declares, so a few kilobytes declaring gigabytes are refused here, before storing.
    """
    if item.pixel_bytes() <= settings.DICOM_MAX_PIXEL_BYTES_PER_INSTANCE:
        return None
    return InstanceRefused(OUT_OF_RESOURCES, "The decoded pixel data would exceed this node's limit per instance",
                           sop_class_uid=item.sop_class_uid, sop_instance_uid=item.sop_instance_uid)


def _existing_outcome(row: Instance, item: IncomingInstance):
    """The organization's own instance under this UID: the same bytes, or a conflict."""
    return StoreOutcome(row, ALREADY_STORED if row.content_sha256 == item.content_sha256 else CONFLICT)


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


def _patient_key(item: IncomingInstance, organization_id: str) -> tuple[str, str]:
    value = item.text("PatientID")
    if not value:
        return "urn:dicom:uid", f"urn:oid:{item.study_instance_uid}"
    return fhirmap.patient_identifier_system(issuer=item.text("IssuerOfPatientID"),
                                             organization_id=organization_id), value


def _patient_create(item: IncomingInstance, key: tuple[str, str], organization_id: str) -> str:
    resource = fhirmap.patient_resource(system=key[0], value=key[1], name=item.text("PatientName", 324),
                                        birth_date=dicom_date(item.text("PatientBirthDate", 16)),
                                        sex=item.text("PatientSex", 16))
    created = resource_create(resource_type="Patient", text=json.dumps(resource), organization_id=organization_id)
    return created.resource.logical_id


def _instance_row(study: Study, series: Series, item: IncomingInstance) -> Instance:
    return Instance(
        study=study, series=series, organization_id=study.organization_id, sop_instance_uid=item.sop_instance_uid,
        sop_class_uid=item.sop_class_uid, transfer_syntax_uid=item.transfer_syntax_uid,
        instance_number=item.integer("InstanceNumber"),
        number_of_frames=max(1, item.integer("NumberOfFrames") or 1),
        rows=item.integer("Rows"), columns=item.integer("Columns"),
        content_sha256=item.content_sha256, size=len(item.data),
        storage_key=instance_key(study.organization_id, study.study_instance_uid, item.sop_instance_uid),
        attributes=item.attributes(dicomjson.INSTANCE_LEVEL_TAGS),
    )

