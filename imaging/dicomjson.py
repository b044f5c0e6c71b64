"""DICOM JSON (PS3.18 Annex F): the metadata kept per instance and the shapes QIDO/STOW answer.

Pure functions over pydicom datasets and plain dicts; no database, no HTTP.
"""

from __future__ import annotations

import io
import json
import re
import warnings

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

BULK_DATA_THRESHOLD = 1024

# Attributes kept in the database for QIDO-RS, by level: the PS3.18 Table 10.6.3-3..5 defaults,
# the patient module and the attributes viewers commonly ask for with includefield. WADO-RS
# metadata is read from the files (complete); QIDO answers from these.
STUDY_TAGS = (
    "00080005", "00080020", "00080030", "00080050", "00080056", "00080090", "00080201",
    "00081030", "00100010", "00100020", "00100021", "00100030", "00100040", "00101010", "00101020",
    "00101030", "0020000D", "00200010",
)
SERIES_TAGS = (
    "00080021", "00080031", "00080060", "0008103E", "00180015", "00181030", "0020000E", "00200011",
    "00400244", "00400245",
)
INSTANCE_TAGS = (
    "00080016", "00080018", "00200013", "00280008", "00280010", "00280011", "00280100",
)
INSTANCE_LEVEL_TAGS = INSTANCE_TAGS + (
    "00080008", "00080022", "00080023", "0008002A", "00080032", "00080033", "00080070", "00081090",
    "00180050", "00181020", "00181063", "00200020", "00200032", "00200037", "00201041", "00280002",
    "00280004", "00280006", "00280030", "00280101", "00280102", "00280103", "00281050", "00281051",
    "00282110",
)
KEPT_TAGS = tuple(sorted({*STUDY_TAGS, *SERIES_TAGS, *INSTANCE_LEVEL_TAGS}))

# Keywords QIDO matches on, by level, with the model field they compare.
RETRIEVE_URL = "00081190"
MODALITIES_IN_STUDY = "00080061"
STUDY_SERIES_COUNT = "00201206"
STUDY_INSTANCE_COUNT = "00201208"
SERIES_INSTANCE_COUNT = "00201209"
AVAILABLE_TRANSFER_SYNTAX = "00083002"


def dataset_json(dataset: Dataset) -> dict:
    """The data set as DICOM JSON without bulk data (Pixel Data and large binary values)."""
    try:
        data = dataset.to_json_dict(bulk_data_threshold=BULK_DATA_THRESHOLD,
                                    bulk_data_element_handler=_no_uri, suppress_invalid_tags=True)
    except (ValueError, TypeError, AttributeError, KeyError):
        return {}
    needs_cleaning = '"BulkDataURI": ""' in (text := json.dumps(data)) or "\\u0000" in text
    return _clean(data) if needs_cleaning else data


def file_json(data: bytes) -> dict:
    """A stored file's data set as DICOM JSON without bulk data (WADO-RS metadata)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataset_json(dcmread(io.BytesIO(data), stop_before_pixels=True))


def kept_json(dataset: Dataset, tags: tuple[str, ...] = KEPT_TAGS) -> dict:
    """Only some attributes (by default all kept for QIDO-RS) as DICOM JSON: cheap at ingest."""
    kept = Dataset()
    for tag in tags:
        number = int(tag, 16)
        if number in dataset:
            kept.add(dataset[number])
    return dataset_json(kept)


def _no_uri(element) -> str:
    return ""


def _clean(value):
    """Drop bulk data stubs and NUL characters (PostgreSQL's jsonb refuses \\u0000)."""
    if isinstance(value, dict):
        if value.get("BulkDataURI") == "":
            return None
        cleaned = {key: _clean(item) for key, item in value.items()}
        return {key: item for key, item in cleaned.items() if item is not None}
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, str):
        return value.replace("\x00", "")
    return value


def subset(attributes: dict, tags: tuple[str, ...]) -> dict:
    return {tag: attributes[tag] for tag in tags if tag in attributes}


def element(tag: str, vr: str, *values) -> dict:
    present = [value for value in values if value not in (None, "")]
    return {tag: {"vr": vr, "Value": present} if present else {"vr": vr}}


def tag_of(name: str) -> str | None:
    """A QIDO attribute name (keyword or 8 hex digits) as the JSON tag key, or None."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return name.upper()
    tag = tag_for_keyword(name)
    return f"{tag:08X}" if tag is not None else None


def vr_of(tag: str) -> str:
    try:
        return dictionary_VR(int(tag, 16))
    except KeyError:
        return "UN"


def store_response(*, retrieve_url: str | None, referenced: list[dict], failed: list[dict]) -> dict:
    """The STOW-RS response data set (PS3.18 Table 10.5.3-1)."""
    body: dict = {}
    if retrieve_url:
        body.update(element(RETRIEVE_URL, "UR", retrieve_url))
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {**element("00081150", "UI", item["sop_class"]), **element("00081155", "UI", item["sop_instance"]),
             **element("00081197", "US", item["reason"])} for item in failed]}
    if referenced:
        body["00081199"] = {"vr": "SQ", "Value": [_referenced(item) for item in referenced]}
    return body


def _referenced(item: dict) -> dict:
    entry = {**element("00081150", "UI", item["sop_class"]), **element("00081155", "UI", item["sop_instance"]),
             **element(RETRIEVE_URL, "UR", item["url"])}
    if item.get("warning"):
        entry.update(element("00081196", "US", item["warning"]))
    return entry
