"""DICOM for Carrack: read Part-10 bytes and de-identify a data set (PS3.15 Annex E).

A pure module on pydicom, without database code. ``deidentify`` applies the Basic Application
Level Confidentiality Profile (every row of Table E.1-1, private attributes removed, UIDs
remapped with a keyed hash) and the options chosen in ``DeidOptions``; it records what it did
in the data set itself (Patient Identity Removed, De-identification Method and its code
sequence). The details and the sources of the tables are in docs/imaging-deidentification.md.

Errors about the input are ``DicomRefused``; their messages never quote values of the file.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from pydicom import dcmread, dcmwrite
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from imaging import deid_tables as table
from imaging.deid_pixels import PixelsRefused, clean_ultrasound
from imaging.deid_profile import Profile, date_offset_days, phi_words, profile_apply

IMPLEMENTATION_VERSION = "CARRACK_DEID_1"
_ULTRASOUND_CLASSES = frozenset({
    UltrasoundImageStorage, UltrasoundMultiFrameImageStorage,
    "1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.3",  # retired US and US multi-frame
})


class DicomRefused(ValueError):
    """The input is not DICOM, is truncated, or cannot be de-identified as asked."""


@dataclass(frozen=True)
class DeidOptions:
    """PS3.15 E.3 options on top of the basic profile (all on by default)."""

    retain_longitudinal_modified_dates: bool = True
    clean_descriptors: bool = True
    clean_pixel_data: bool = True
    banner_rows: int = 0  # extra rows blanked at the top of every frame
    max_pixel_bytes: int = 1 << 30  # decoded pixels beyond this are refused, never decoded

    def __post_init__(self) -> None:
        if self.banner_rows < 0:
            raise ValueError("banner_rows must be >= 0")


def deidentify(ds: Dataset, *, key: bytes, options: DeidOptions = DeidOptions()) -> Dataset:
    """A de-identified copy of ``ds`` (``ds`` itself is left as it was).

    ``key`` (>= 16 bytes, secret) keys the UID mapping, the Patient ID pseudonym and the date
    shift: the same key maps the instances of a study consistently across calls and processes.
    """
    _check_key(key)
    return _deidentify(ds, check_dataset(ds), key, options)


def deidentify_bytes(data: bytes, *, key: bytes, options: DeidOptions = DeidOptions()) -> bytes:
    """Part-10 file in, de-identified Part-10 file out."""
    _check_key(key)
    ds, syntax = _read(data)
    return write_part10(_deidentify(ds, syntax, key, options))


def read_part10(data: bytes) -> Dataset:
    """Parse a DICOM Part-10 file (preamble, 'DICM', file meta) and check it is complete."""
    return _read(data)[0]


def _read(data: bytes) -> tuple[Dataset, UID]:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("data must be bytes")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = dcmread(io.BytesIO(bytes(data)), force=False)
    except InvalidDicomError as exc:
        raise DicomRefused("not a DICOM Part-10 file: no 'DICM' prefix and file meta "
                           "information") from exc
    except (EOFError, OSError, ValueError, KeyError, IndexError, struct.error) as exc:
        raise DicomRefused(f"unreadable DICOM file ({type(exc).__name__})") from exc
    if any("End of file" in str(w.message) for w in caught):  # pydicom warns, keeps a stub
        raise DicomRefused("DICOM file is truncated: it ends before a sequence or pixel data "
                           "delimiter")
    return ds, check_dataset(ds)


def _deidentify(ds: Dataset, syntax: UID, key: bytes, options: DeidOptions) -> Dataset:
    profile = _profile(ds, key, options)
    out = profile_apply(ds, profile)
    out.file_meta = _file_meta(out, syntax)
    applied = [table.BASIC_PROFILE]
    if options.clean_pixel_data and is_ultrasound(ds):
        _clean_pixels(out, options)
        applied.append(table.CLEAN_PIXEL_DATA)
    if options.clean_descriptors:
        applied.append(table.CLEAN_DESCRIPTORS_OPTION)
    if profile.date_offset_days is not None:
        applied.append(table.MODIFIED_DATES_OPTION)
    _record(out, applied, options)
    return out


def write_part10(ds: Dataset) -> bytes:
    """``ds`` as a Part-10 file (preamble, 'DICM', its file meta)."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def check_dataset(ds: Dataset) -> UID:
    """The data set's transfer syntax, after refusing what is empty, truncated or unsupported."""
    if not isinstance(ds, Dataset):
        raise TypeError("ds must be a pydicom Dataset")
    if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
        raise DicomRefused("DICOM data set has no SOP Class UID or SOP Instance UID: empty, "
                           "truncated, or not a composite instance")
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and raw.value is not None \
                and len(raw.value) < raw.length:
            raise DicomRefused(f"DICOM file is truncated inside attribute {tag}")
    syntax = _syntax(ds)
    _check_native_pixels(ds, syntax)
    return syntax


def is_ultrasound(ds: Dataset) -> bool:
    return (ds.get("Modality") == "US" or ds.get("SOPClassUID") in _ULTRASOUND_CLASSES
            or "SequenceOfUltrasoundRegions" in ds)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes) or len(key) < 16:
        raise ValueError("key must be a secret of at least 16 bytes")


def _syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = UID(meta.get("TransferSyntaxUID", "")) if meta is not None else UID("")
    if not syntax:
        return ExplicitVRLittleEndian  # a data set built in memory: native little endian
    if not syntax.is_transfer_syntax:
        raise DicomRefused("unknown transfer syntax in the file meta information")
    return syntax


def _check_native_pixels(ds: Dataset, syntax: UID) -> None:
    if "PixelData" not in ds or syntax.is_compressed:
        return
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        bits = int(ds.BitsAllocated)
        samples = 2 if ds.get("PhotometricInterpretation") == "YBR_FULL_422" else int(
            ds.SamplesPerPixel)  # 4:2:2 stores two samples per pixel
        expected = int(ds.Rows) * int(ds.Columns) * samples * frames
    except (AttributeError, TypeError, ValueError) as exc:
        raise DicomRefused("pixel data without a valid Image Pixel module") from exc
    expected = (expected * bits + 7) // 8
    actual = ds.get_item("PixelData")
    length = len(actual.value) if actual.value is not None else 0
    if length < expected:
        raise DicomRefused(f"pixel data is truncated: {length} of {expected} bytes")


def _profile(ds: Dataset, key: bytes, options: DeidOptions) -> Profile:
    patient_id = str(ds.get("PatientID") or "")
    offset = (date_offset_days(key, patient_id)
              if options.retain_longitudinal_modified_dates else None)
    return Profile(
        key=key,
        families=table.families_of(str(ds.get("SOPClassUID", ""))),
        date_offset_days=offset,
        clean_descriptors=options.clean_descriptors,
        phi_words=phi_words(ds) if options.clean_descriptors else frozenset(),
        species_present=any(tag in ds for tag in table.SPECIES),
    )


def _file_meta(out: Dataset, syntax: UID) -> FileMetaDataset:
    """New file meta: no source/sending AE titles, no private information of the sender."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax == ImplicitVRLittleEndian else syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _clean_pixels(out: Dataset, options: DeidOptions) -> None:
    try:
        clean_ultrasound(out, banner_rows=options.banner_rows, max_pixel_bytes=options.max_pixel_bytes)
    except PixelsRefused as exc:
        raise DicomRefused(str(exc)) from exc


def _record(out: Dataset, applied: list[tuple[str, str]], options: DeidOptions) -> None:
    """PS3.15 E.1.1: say that identity was removed, and exactly how (CID 7050 codes)."""
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = [_method_text(code, options) for code in applied]
    out.DeidentificationMethodCodeSequence = Sequence([_code(*code) for code in applied])
    retained = table.MODIFIED_DATES_OPTION in applied
    out.LongitudinalTemporalInformationModified = "MODIFIED" if retained else "REMOVED"


def _method_text(code: tuple[str, str], options: DeidOptions) -> str:
    texts = {
        table.BASIC_PROFILE: "PS3.15 E.1-1 2026c Basic Profile (Carrack)",
        table.MODIFIED_DATES_OPTION: "Retain Longitudinal Modified Dates: per-patient day shift",
        table.CLEAN_DESCRIPTORS_OPTION: "Clean Descriptors: allow-listed words only",
        table.CLEAN_PIXEL_DATA: f"Clean Pixel Data: outside US regions, top {options.banner_rows} rows",
    }
    return texts[code][:64]


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item
