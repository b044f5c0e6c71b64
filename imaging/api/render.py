"""DICOM JSON answers from rows: QIDO-RS results (attributes, counts, retrieve URLs), STOW-RS items."""

from __future__ import annotations

from imaging import dicomjson as dj
from imaging import services
from imaging.models import Instance, Series, Study
from imaging.reading import DUPLICATE_SOP_INSTANCE, InstanceRefused

ALL = "all"


def study_url(base: str, study: Study) -> str:
    return f"{base}/studies/{study.study_instance_uid}"


def series_url(base: str, series: Series) -> str:
    return f"{study_url(base, series.study)}/series/{series.series_instance_uid}"


def instance_url(base: str, instance: Instance) -> str:
    return f"{series_url(base, instance.series)}/instances/{instance.sop_instance_uid}"


def _included(includes: set[str] | str, source: dict, default: dict) -> dict:
    if includes == ALL:
        return {**source, **default}
    extra = {tag: source[tag] for tag in includes if tag in source and tag not in default}
    return {**default, **extra}


def study_json(study: Study, base: str, includes, first: dict | None = None) -> dict:
    default = dict(study.attributes)
    default.update(dj.element(dj.MODALITIES_IN_STUDY, "CS", *study.modalities))
    default.update(dj.element(dj.STUDY_SERIES_COUNT, "IS", study.series_count))
    default.update(dj.element(dj.STUDY_INSTANCE_COUNT, "IS", study.instance_count))
    default.update(dj.element(dj.RETRIEVE_URL, "UR", study_url(base, study)))
    source = dj.subset(first or {}, dj.STUDY_TAGS) if includes == ALL else (first or {})
    return dict(sorted(_included(includes, source, default).items()))


def series_json(series: Series, base: str, includes, first: dict | None = None) -> dict:
    default = {**series.study.attributes, **series.attributes}
    default.update(dj.element(dj.SERIES_INSTANCE_COUNT, "IS", series.instance_count))
    default.update(dj.element(dj.RETRIEVE_URL, "UR", series_url(base, series)))
    source = dj.subset(first or {}, dj.SERIES_TAGS) if includes == ALL else (first or {})
    return dict(sorted(_included(includes, source, default).items()))


def instance_json(instance: Instance, base: str, includes) -> dict:
    default = {**instance.study.attributes, **instance.series.attributes,
               **dj.subset(instance.attributes, dj.INSTANCE_TAGS)}
    default.update(dj.element(dj.AVAILABLE_TRANSFER_SYNTAX, "UI", instance.transfer_syntax_uid))
    default.update(dj.element(dj.RETRIEVE_URL, "UR", instance_url(base, instance)))
    return dict(sorted(_included(includes, instance.attributes, default).items()))


def stow_items(outcomes: list, base: str) -> tuple[list[dict], list[dict], list[Study]]:
    """ReferencedSOPSequence and FailedSOPSequence items of a STOW-RS answer, and its studies."""
    referenced, failed, studies = [], [], {}
    for outcome in outcomes:
        if isinstance(outcome, InstanceRefused):
            failed.append({"sop_class": outcome.sop_class_uid, "sop_instance": outcome.sop_instance_uid,
                           "reason": outcome.status})
            continue
        studies.setdefault(outcome.study.pk, outcome.study)
        item = {"sop_class": outcome.instance.sop_class_uid, "sop_instance": outcome.instance.sop_instance_uid}
        if outcome.result == services.CONFLICT:
            failed.append({**item, "reason": DUPLICATE_SOP_INSTANCE})
        else:
            referenced.append({**item, "url": instance_url(base, outcome.instance)})
    return referenced, failed, list(studies.values())
