"""The attribute part of the confidentiality profile: one walk that builds a new data set.

Each attribute of the source, at any depth, gets one action: the option columns first (shifted
dates, cleaned descriptors), then its Table E.1-1 action with compound actions resolved for the
IOD, then Carrack's safety nets for attributes the table does not list (person names emptied,
dates shifted or emptied, instance UIDs remapped). Kept attributes are copied as they were read
(raw, unconverted), which is most of a file and why the walk is cheap. The source is never
modified; values are shared only where they are immutable.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import cache

from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from imaging import deid_tables as table

_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_STRING_VRS = _TEXT_VRS | {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "PN", "TM", "UI", "UR"}
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_NUMBER_VRS = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "SV", "UV", "AT"})
_DUMMY = {"AS": "000D", "DA": "19000101", "DS": "0", "DT": "19000101000000", "IS": "0",
          "TM": "000000"}
_DUMMY_TEXT = "ANONYMIZED"


@dataclass
class Profile:
    """What one de-identification call needs: the key, the IOD family and the options."""

    key: bytes
    families: frozenset[str]
    date_offset_days: int | None
    clean_descriptors: bool
    phi_words: frozenset[str] = frozenset()
    species_present: bool = False
    _uids: dict[str, str] = field(default_factory=dict)

    def uid(self, value: str) -> str:
        """Keyed replacement of an instance UID; well-known (standard) UIDs stay as they are."""
        if not value or value in table.WELL_KNOWN_UIDS:
            return value
        if value not in self._uids:
            self._uids[value] = keyed_uid(self.key, value)
        return self._uids[value]


def keyed_uid(key: bytes, uid: str) -> str:
    """``2.25.`` + a UUID (RFC 9562 version 8) taken from HMAC-SHA256(key, uid).

    Deterministic, so every instance of a study maps its shared UIDs the same way, in any
    process; keyed, so nobody without the key can recompute or reverse the mapping.
    """
    digest = hmac.new(key, b"carrack-uid\x00" + uid.encode("ascii", "replace"),
                      hashlib.sha256).digest()
    number = int.from_bytes(digest[:16], "big")
    number = (number & ~(0xF << 76)) | (0x8 << 76)
    number = (number & ~(0x3 << 62)) | (0x2 << 62)
    return f"2.25.{number}"


def date_offset_days(key: bytes, patient_id: str) -> int:
    """One shift per patient: -365..-1 or 1..365 days, from the key and the original Patient ID."""
    digest = hmac.new(key, b"carrack-date-shift\x00" + patient_id.encode("utf-8"),
                      hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big") % 730
    return n - 365 if n < 365 else n - 364


def patient_pseudonym(key: bytes, patient_id: str) -> str:
    """Keyed pseudonym of the Patient ID (the Z action allows a dummy value); links studies."""
    digest = hmac.new(key, b"carrack-patient\x00" + patient_id.encode("utf-8"),
                      hashlib.sha256).hexdigest()
    return "ANON-" + digest[:20].upper()


# --- the walk -----------------------------------------------------------------------------------

def profile_apply(source: Dataset, profile: Profile) -> Dataset:
    """A new data set holding the source's attributes after the profile's actions."""
    return _walk(source, profile, cleaning=False)


def _walk(source: Dataset, profile: Profile, cleaning: bool) -> Dataset:
    elements: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag in list(source.keys()):
        if not _group_removed(tag):
            new = _element(source, tag, profile, cleaning)
            if new is not None:
                elements[tag] = new
    return _dataset_like(source, elements)


def _dataset_like(source: Dataset, elements: dict) -> Dataset:
    """A data set of ``elements`` with the source's original encoding and character set.

    Built from the dict at once, as pydicom's reader does (no per-element checks). Raw elements
    are then written as they were read, without decoding, and raw text in sequence items keeps
    the character set of its parent. Sequences go through ``__setitem__``, which passes the
    Pixel Representation down to their items (for US-or-SS attributes of implicit VR files).
    """
    charset = source.original_character_set
    out = Dataset(elements, parent_encoding=charset)
    raw = next((e for e in elements.values() if isinstance(e, RawDataElement)), None)
    if raw is not None:  # what the raw elements really are (a file may contradict its syntax)
        out.set_original_encoding(raw.is_implicit_VR, raw.is_little_endian, charset)
    for tag, elem in elements.items():
        if isinstance(elem, DataElement) and elem.VR == "SQ":
            out[tag] = elem
    return out


def _group_removed(tag: BaseTag) -> bool:
    """Private groups, curves (50xx), overlays (60xx), group lengths and stray file meta.

    Overlay Data is X in the table; the rest of its Overlay Plane module goes with it, since
    the module without its Type 1 data would not conform.
    """
    group = tag >> 16
    return (group % 2 == 1 or (group & 0xFF00) in (0x5000, 0x6000)
            or (tag & 0xFFFF) == 0 or group == 0x0002)


def _element(source: Dataset, tag: BaseTag, profile: Profile, cleaning: bool):
    raw = source.get_item(tag)
    vr = _vr(tag, raw)
    action = _action(int(tag), vr, profile, cleaning)
    if action == "K":
        return _copy(raw)
    if action == "X":
        return None
    if action in ("Z", "D") and vr not in ("SQ", "UI") and " or " not in vr:
        return DataElement(tag, vr, "" if vr in _STRING_VRS else None) if action == "Z" \
            else DataElement(tag, vr, dummy_value(vr))  # the value is not needed: no decoding
    elem = source[tag]
    return _HANDLERS[action](elem, profile, cleaning, int(tag))


def _vr(tag: BaseTag, raw: DataElement | RawDataElement) -> str:
    if raw.VR and " or " not in raw.VR:
        return raw.VR
    return dictionary_VR(tag) if dictionary_has_tag(tag) else "UN"


def _copy(raw: DataElement | RawDataElement) -> DataElement | RawDataElement:
    if isinstance(raw, RawDataElement):
        return raw  # immutable
    return DataElement(raw.tag, raw.VR, copy.copy(raw.value))


def _action(tag: int, vr: str, profile: Profile, cleaning: bool) -> str:
    basic = table.BASIC_ACTIONS.get(tag)
    if basic is None:
        return _unlisted_action(tag, vr, profile, cleaning)
    if profile.date_offset_days is not None and tag in table.MODIFIED_DATES:
        return "SHIFT"
    if profile.clean_descriptors and tag in table.CLEAN_DESCRIPTORS:
        return "CLEAN"
    if tag == table.PATIENT_ID:
        return "PSEUDONYM"
    return resolve(basic, tag, profile)


def resolve(basic: str, tag: int, profile: Profile) -> str:
    """One action out of a compound one, for the IOD family at hand (PS3.15 E.1.1 legend)."""
    if "/" not in basic:
        return basic
    if tag == table.PATIENT_SEX_NEUTERED:
        return "Z" if profile.species_present else "X"  # Type 2C: required for animals
    rules = table.COMPOUND_RULES.get(tag, {})
    for family in sorted(profile.families):
        if family in rules:
            return rules[family]
    return basic.split("/")[0]


def _unlisted_action(tag: int, vr: str, profile: Profile, cleaning: bool) -> str:
    """Safety nets beyond the table: names, dates and instance UIDs wherever they appear."""
    if vr == "SQ":
        return "RECURSE"
    if vr == "UI":
        return "K" if tag in table.UID_KEEP else "U"
    if vr == "PN":
        return "Z"
    if vr in ("DA", "DT"):
        return "SHIFT" if profile.date_offset_days is not None else "Z"
    if cleaning and vr in _TEXT_VRS and tag not in table.CODE_PARTS:
        return "CLEAN"
    return "K"


# --- handlers -----------------------------------------------------------------------------------

def _zero(elem: DataElement, profile: Profile, cleaning: bool, tag: int) -> DataElement:
    if elem.VR == "SQ":
        return DataElement(elem.tag, "SQ", Sequence())
    return DataElement(elem.tag, elem.VR, "" if elem.VR in _STRING_VRS else None)


def _dummy(elem: DataElement, profile: Profile, cleaning: bool, tag: int) -> DataElement:
    """D: a non-empty value of the right VR; a sequence keeps its items, each de-identified."""
    if elem.VR == "SQ":
        return _recurse(elem, profile, cleaning, tag)
    if elem.VR == "UI":
        return _uid(elem, profile, cleaning, tag)
    return DataElement(elem.tag, elem.VR, dummy_value(elem.VR))


def dummy_value(vr: str):
    if vr in _NUMBER_VRS:
        return 0
    if vr in _BYTES_VRS:
        return b"\x00" * 8
    return _DUMMY.get(vr, _DUMMY_TEXT)


def _uid(elem: DataElement, profile: Profile, cleaning: bool, tag: int) -> DataElement:
    values = _values(elem)
    mapped = [profile.uid(str(v)) for v in values]
    return DataElement(elem.tag, "UI", _pack(mapped, elem))


def _recurse(elem: DataElement, profile: Profile, cleaning: bool, tag: int) -> DataElement:
    items = [_walk(item, profile, cleaning) for item in elem.value or []]
    return DataElement(elem.tag, "SQ", Sequence(items))


def _shift(elem: DataElement, profile: Profile, cleaning: bool, tag: int) -> DataElement:
    """C (modified dates): DA and DT move by the patient's offset; TM stays (whole days)."""
    if elem.VR not in ("DA", "DT"):
        return _copy(elem)
    shift = shift_date if elem.VR == "DA" else shift_datetime
    shifted = [shift(str(v), profile.date_offset_days or 0) for v in _values(elem)]
    if any(s is None for s in shifted):
        return _zero(elem, profile, cleaning, tag)
    return DataElement(elem.tag, elem.VR, _pack(shifted, elem))


def _clean(elem: DataElement, profile: Profile, cleaning: bool, tag: int):
    """C (clean descriptors): keep only allow-listed words; nothing left -> the basic action."""
    if elem.VR == "SQ":
        return _recurse(elem, profile, True, tag)
    if elem.VR in _TEXT_VRS:
        kept = [clean_text(str(v), profile.phi_words) for v in _values(elem)]
        kept = [k for k in kept if k]
        if kept:
            return DataElement(elem.tag, elem.VR, _pack(kept, elem))
    basic = table.BASIC_ACTIONS.get(tag)
    action = resolve(basic, tag, profile) if basic else "X"
    return None if action == "X" else _HANDLERS[action](elem, profile, cleaning, tag)


def _pseudonym(elem: DataElement, profile: Profile, cleaning: bool, tag: int) -> DataElement:
    value = str(elem.value or "")
    return DataElement(elem.tag, elem.VR, patient_pseudonym(profile.key, value) if value else "")


def _values(elem: DataElement) -> list:
    if elem.value is None or elem.value == "":
        return []
    return list(elem.value) if elem.VM > 1 else [elem.value]


def _pack(values: list, elem: DataElement):
    if not values:
        return "" if elem.VR in _STRING_VRS else None
    return values if len(values) > 1 else values[0]


_HANDLERS = {
    "Z": _zero, "D": _dummy, "U": _uid, "U*": _recurse, "RECURSE": _recurse,
    "SHIFT": _shift, "CLEAN": _clean, "PSEUDONYM": _pseudonym,
}


# --- dates ----------------------------------------------------------------------------------------

def shift_date(value: str, days: int) -> str | None:
    """A DA value moved by ``days``; None when it is not a date (then it is emptied)."""
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        moved = date(int(text[:4]), int(text[4:6]), int(text[6:])) + timedelta(days=days)
    except ValueError:
        return None
    return moved.strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value moved by ``days``: the date part shifts, time, fraction and offset stay."""
    text = value.strip()
    if len(text) >= 8:
        head = shift_date(text[:8], days)
        return None if head is None else head + text[8:]
    if len(text) in (4, 6) and text.isdigit():  # reduced precision: YYYY or YYYYMM
        anchor = shift_date(text + ("0701" if len(text) == 4 else "15"), days)
        return None if anchor is None else anchor[: len(text)]
    return None


# --- clean descriptors ----------------------------------------------------------------------------

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-./]*")
_WORD = re.compile(r"[A-Za-z0-9]+")
_MEASURE = re.compile(r"\d{1,3}(\.\d{1,2})?([a-z]{1,3})?")


@cache
def vocabulary() -> frozenset[str]:
    """Words allowed in cleaned descriptors.

    The words of the code meanings that pydicom ships (DICOM CID concepts: SNOMED CT, DCM,
    LOINC, RadLex...) that also occur in lower case there, so eponyms and other proper nouns
    (always capitalised) stay out; plus ``EXTRA_VOCABULARY``.
    """
    from pydicom.sr._concepts_dict import concepts

    words = set(table.EXTRA_VOCABULARY)
    for scheme in concepts.values():
        for codes in scheme.values():
            for meaning, _cids in codes.values():
                words.update(re.findall(r"(?<![A-Za-z])[a-z][a-z\-]+", meaning))
    return frozenset(words)


def clean_text(value: str, phi_words: frozenset[str]) -> str:
    """The allow-listed words of ``value``, space separated, minus any word of the patient's data."""
    allowed = vocabulary()
    kept = [t.strip(".'/-") for t in _TOKEN.findall(value)]
    return " ".join(t for t in kept if t and _safe_word(t.lower(), allowed, phi_words))


def _safe_word(word: str, allowed: frozenset[str], phi_words: frozenset[str]) -> bool:
    if word in phi_words:
        return False
    return word in allowed or bool(_MEASURE.fullmatch(word))


def phi_words(source: Dataset) -> frozenset[str]:
    """Words of the identifying attributes (names, IDs, addresses...) anywhere in the source.

    Clean Descriptors drops them from descriptions even when they are ordinary words.
    """
    words: set[str] = set()
    _collect_phi(source, words)
    return frozenset(words)


def _collect_phi(source: Dataset, words: set[str]) -> None:
    for tag in list(source.keys()):
        if _group_removed(tag):
            continue
        raw = source.get_item(tag)
        vr = _vr(tag, raw)
        if vr == "SQ":
            for item in source[tag].value or []:
                _collect_phi(item, words)
        elif _is_identifying(int(tag), vr):
            words.update(w.lower() for w in _WORD.findall(_text(raw)))


def _text(raw: DataElement | RawDataElement) -> str:
    """The value as text, raw bytes read as Latin-1: enough to find the words, and no decoding
    (pydicom's conversion of hundreds of elements is most of the cost of this pass)."""
    if isinstance(raw, RawDataElement):
        return raw.value.decode("latin-1") if raw.value else ""
    return " ".join(str(v) for v in _values(raw))


def _is_identifying(tag: int, vr: str) -> bool:
    if vr == "PN":
        return True
    if vr not in _TEXT_VRS and vr not in ("AE", "CS"):
        return False
    return tag in table.BASIC_ACTIONS and tag not in table.CLEAN_DESCRIPTORS
