"""Reads of the imaging app: QIDO-RS matching and the rows WADO-RS retrieves.

Every query takes the caller's ``visible`` filter (a Q on ``Study`` from
``imaging.access.study_visible``), so a study outside the caller's access is never matched,
counted or paged over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from .models import Instance, Series, Study
from .reading import dicom_date

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

# QIDO matching attributes (tag → field path on the level's model, match kind), by level.
STUDY_MATCHES = {
    "0020000D": ("study_instance_uid", "uid"),
    "00100020": ("dicom_patient_id", "text"),
    "00100021": ("issuer_of_patient_id", "text"),
    "00100010": ("patient_name", "name"),
    "00080020": ("study_date", "date"),
    "00080050": ("accession_number", "text"),
    "00080061": ("modalities", "modalities"),
    "00200010": ("study_id", "text"),
    "00081030": ("study_description", "name"),
}
SERIES_MATCHES = {
    "0020000E": ("series_instance_uid", "uid"),
    "00080060": ("modality", "text"),
    "00200011": ("series_number", "integer"),
    "0008103E": ("series_description", "name"),
}
INSTANCE_MATCHES = {
    "00080018": ("sop_instance_uid", "uid"),
    "00080016": ("sop_class_uid", "uid"),
    "00200013": ("instance_number", "integer"),
}


class QueryError(ValueError):
    """A QIDO parameter whose value cannot be matched (bad date range, bad number)."""


@dataclass
class Page:
    rows: list
    ignored: list[str] = field(default_factory=list)  # matching attributes not supported


def _condition(path: str, kind: str, value: str) -> Q:
    if kind == "uid":
        return Q(**{f"{path}__in": [v for v in re.split(r"[\\,]", value) if v]})
    if kind == "date":
        return _date_range(path, value)
    if kind == "integer":
        try:
            return Q(**{path: int(value)})
        except ValueError:
            raise QueryError(f"'{value}' is not a number") from None
    if kind == "modalities":
        return Q(**{f"{path}__overlap": [v for v in re.split(r"[\\,]", value) if v]})
    if "*" in value or "?" in value:
        pattern = "^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in value) + "$"
        return Q(**{f"{path}__iregex" if kind == "name" else f"{path}__regex": pattern})
    return Q(**{f"{path}__iexact" if kind == "name" else path: value})


def _date_range(path: str, value: str) -> Q:
    low_text, dash, high_text = value.partition("-")
    low, high = dicom_date(low_text), dicom_date(high_text)
    if (low_text and low is None) or (high_text and high is None) or not (low or high):
        raise QueryError(f"'{value}' is not a DICOM date or date range (YYYYMMDD[-YYYYMMDD])")
    if not dash:
        return Q(**{path: low})
    condition = Q()
    if low:
        condition &= Q(**{f"{path}__gte": low})
    if high:
        condition &= Q(**{f"{path}__lte": high})
    return condition


def _filters(matches: dict[str, str], table: dict[str, tuple[str, str]], prefix: str = "") -> Q:
    condition = Q()
    for tag, value in matches.items():
        if tag in table and value != "":
            path, kind = table[tag]
            condition &= _condition(prefix + path, kind, value)
    return condition


def _ignored(matches: dict[str, str], *tables: dict) -> list[str]:
    known = set().union(*tables)
    return sorted(tag for tag in matches if tag not in known)


def studies_search(*, visible: Q, matches: dict[str, str], limit: int, offset: int) -> Page:
    """Studies matching QIDO attributes, oldest first, with their series and instance counts."""
    series_count = Series.objects.filter(study=OuterRef("pk")).values("study").annotate(n=Count("pk")).values("n")
    instance_count = (Instance.objects.filter(study=OuterRef("pk")).values("study")
                      .annotate(n=Count("pk")).values("n"))
    studies = (Study.objects.filter(visible).filter(_filters(matches, STUDY_MATCHES))
               .annotate(series_count=Coalesce(Subquery(series_count), 0),
                         instance_count=Coalesce(Subquery(instance_count), 0))
               .order_by("pk")[offset:offset + limit])
    return Page(list(studies), _ignored(matches, STUDY_MATCHES))


def series_search(*, visible: Q, matches: dict[str, str], limit: int, offset: int,
                  study_uid: str | None = None) -> Page:
    instance_count = (Instance.objects.filter(series=OuterRef("pk")).values("series")
                      .annotate(n=Count("pk")).values("n"))
    rows = Series.objects.filter(study__in=Study.objects.filter(visible))
    if study_uid:
        rows = rows.filter(study__study_instance_uid=study_uid)
    rows = (rows.filter(_filters(matches, STUDY_MATCHES, "study__"))
            .filter(_filters(matches, SERIES_MATCHES))
            .select_related("study").annotate(instance_count=Coalesce(Subquery(instance_count), 0))
            .order_by("pk")[offset:offset + limit])
    return Page(list(rows), _ignored(matches, STUDY_MATCHES, SERIES_MATCHES))


def instances_search(*, visible: Q, matches: dict[str, str], limit: int, offset: int,
                     study_uid: str | None = None, series_uid: str | None = None) -> Page:
    rows = Instance.objects.filter(study__in=Study.objects.filter(visible))
    if study_uid:
        rows = rows.filter(study__study_instance_uid=study_uid)
    if series_uid:
        rows = rows.filter(series__series_instance_uid=series_uid)
    rows = (rows.filter(_filters(matches, STUDY_MATCHES, "study__"))
            .filter(_filters(matches, SERIES_MATCHES, "series__"))
            .filter(_filters(matches, INSTANCE_MATCHES))
            .select_related("study", "series").order_by("pk")[offset:offset + limit])
    return Page(list(rows), _ignored(matches, STUDY_MATCHES, SERIES_MATCHES, INSTANCE_MATCHES))


def first_instance_attributes(*, study_ids: list[int] | None = None,
                              series_ids: list[int] | None = None) -> dict[int, dict]:
    """Attributes of the first instance of each study (or series), for QIDO includefield."""
    key = "study_id" if study_ids is not None else "series_id"
    ids = study_ids if study_ids is not None else series_ids
    rows = (Instance.objects.filter(**{f"{key}__in": ids}).order_by(key, "pk").distinct(key)
            .values_list(key, "attributes"))
    return dict(rows)


def studies_by_uid(*, study_uid: str, organization_id: str | None) -> list[Study]:
    """Every organization's copy of a study UID, the caller's own first, then oldest first.

    UIDs are per organization, so one UID may name several studies; WADO-RS serves the first
    of these the caller may see (``imaging.api.views._readable``).
    """
    rows = Study.objects.filter(study_instance_uid=study_uid).order_by("pk")
    return sorted(rows, key=lambda row: row.organization_id != organization_id)


def instances_of(*, study: Study, series_uid: str | None = None, sop_uid: str | None = None) -> QuerySet:
    """The instances WADO-RS retrieves for a study, series or single instance, in order."""
    rows = Instance.objects.filter(study=study).select_related("series")
    if series_uid:
        rows = rows.filter(series__series_instance_uid=series_uid)
    if sop_uid:
        rows = rows.filter(sop_instance_uid=sop_uid)
    return rows.order_by("series__series_number", "series_id", "instance_number", "pk")


def study_date_text(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""
