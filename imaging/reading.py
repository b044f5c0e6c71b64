"""Incoming DICOM files: read, check, and summarise them (pydicom only, no database).

``instance_read`` turns the bytes of a Part 10 file into an ``IncomingInstance`` or raises
``InstanceRefused`` with the DICOM status that says why (the same code answers C-STORE and
goes into a STOW-RS FailedSOPSequence). A file is refused when it is not DICOM, is cut
short (no complete Pixel Data), lacks its UIDs, or is of a SOP class or transfer syntax
this node does not store.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from datetime import date

import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

from .dicomjson import kept_json
from .header import ENCAPSULATED, NATIVE, PIXEL_DATA, Header, header_read, keyword_tag

# DICOM status codes shared by C-STORE and STOW-RS (PS3.4 Annex B, PS3.18 Table I.2-1).
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111  # the UID is stored with a different content
NOT_AUTHORIZED = 0x0124
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700  # the decoded pixels would exceed DICOM_MAX_PIXEL_BYTES_PER_INSTANCE

# Storage SOP classes accepted: ultrasound first, then secondary capture and the usual others.
STORAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume Storage",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.20": "Nuclear Medicine Image Storage",
    "1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
}

# What devices send: uncompressed, deflate, JPEG baseline/extended/lossless, JPEG-LS,
# JPEG 2000 and RLE (pynetdicom's defaults would refuse compressed ultrasound).
TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.51": "JPEG Extended (Process 2 & 4)",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless (Process 14)",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless (Process 14, SV1)",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 (Lossless Only)",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                "1.2.840.10008.1.2.2"}

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_PREAMBLE = 132  # 128-byte preamble + "DICM"


class InstanceRefused(ValueError):
    """An instance this node will not store; ``status`` is the DICOM failure code."""

    def __init__(self, status: int, message: str, *, sop_class_uid: str = "",
                 sop_instance_uid: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.sop_class_uid = sop_class_uid  # when known: STOW-RS names them in the failure
        self.sop_instance_uid = sop_instance_uid


class IncomingInstance:
    """What the store needs from one file, read once.

    Read by ``imaging.header`` when it can (``header``), else by pydicom (``dataset``, which
    is also parsed on first use for any value the header reader leaves to pydicom).
    """

    __slots__ = ("_dataset", "content_sha256", "data", "header", "series_instance_uid", "sop_class_uid",
                 "sop_instance_uid", "study_instance_uid", "transfer_syntax_uid")

    def __init__(self, *, data: bytes, content_sha256: str, study_instance_uid: str, series_instance_uid: str,
                 sop_instance_uid: str, sop_class_uid: str, transfer_syntax_uid: str,
                 dataset: Dataset | None = None, header: Header | None = None) -> None:
        self.data = data
        self.content_sha256 = content_sha256
        self.study_instance_uid = study_instance_uid
        self.series_instance_uid = series_instance_uid
        self.sop_instance_uid = sop_instance_uid
        self.sop_class_uid = sop_class_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        self.header = header
        self._dataset = dataset

    def __repr__(self) -> str:
        return f"IncomingInstance(sop_instance_uid={self.sop_instance_uid!r}, size={len(self.data)})"

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = _parse(self.data)
        return self._dataset

    def attributes(self, tags: tuple[str, ...]) -> dict:
        """These attributes (a level's kept for QIDO-RS) as DICOM JSON."""
        if self.header is not None:
            found = self.header.json(tags)
            if found is not None:
                return found
        return kept_json(self.dataset, tags)

    def text(self, keyword: str, limit: int = 64) -> str:
        if self.header is not None:
            found = self.header.text(_tag(keyword))
            if found is not None:
                return found[:limit]
        value = self.dataset.get(keyword)
        return "" if value is None else str(value).strip()[:limit]

    def integer(self, keyword: str) -> int | None:
        if self.header is not None:
            found = self.header.integer(_tag(keyword))
            if found is not False:
                return found
        value = self.dataset.get(keyword)
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    def study_date(self) -> date | None:
        return dicom_date(self.text("StudyDate"))

    def pixel_bytes(self) -> int:
        """Bytes the decoded pixels take, as the header declares them (see ``pixel_bytes``)."""
        return pixel_bytes(*(self.integer(keyword) for keyword in _PIXEL_MODULE))


_PIXEL_MODULE = ("Rows", "Columns", "NumberOfFrames", "BitsAllocated", "SamplesPerPixel")


def pixel_bytes(rows, columns, frames=1, bits_allocated=8, samples=1) -> int:
    """Rows × Columns × Frames × bytes per sample × SamplesPerPixel, as a decoder allocates them.

    What the header declares, not what the file holds: a compressed file of a few kilobytes
    may declare gigabytes, and every decoder allocates what it declares. Missing values count
    as 1 (bits as 8); a decoder rounds samples up to whole bytes (1 and 12 bits included).
    """
    def value(number, default: int) -> int:
        return abs(number) if isinstance(number, int) and number else default

    return (value(rows, 1) * value(columns, 1) * value(frames, 1) * value(samples, 1)
            * ((value(bits_allocated, 8) + 7) // 8))


_TAGS: dict[str, int] = {}


def _tag(keyword: str) -> int:
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = _TAGS[keyword] = keyword_tag(keyword)
    return tag


def is_uid(value: str) -> bool:
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def dicom_date(value: str) -> date | None:
    if re.fullmatch(r"\d{8}", value or ""):
        try:
            return date(int(value[:4]), int(value[4:6]), int(value[6:8]))
        except ValueError:
            return None
    return None


def instance_read(data: bytes) -> IncomingInstance:
    """Parse and check a DICOM Part 10 file; raise ``InstanceRefused`` if it cannot be stored.

    A file whose meta group comes without the 128-byte preamble and ``DICM`` (as some
    writers send it) gets them, so what is stored is always a complete Part 10 file.
    """
    if data[128:132] != b"DICM" and data[:4] == b"\x02\x00\x00\x00":
        data = b"\x00" * 128 + b"DICM" + data
    fast = _fast_read(data)
    if fast is not None:
        return fast
    dataset = _parse(data)
    try:
        return _checked(data, dataset)
    except InstanceRefused as error:
        error.sop_class_uid = _uid_or_empty(dataset.get("SOPClassUID"))
        error.sop_instance_uid = _uid_or_empty(dataset.get("SOPInstanceUID"))
        raise


def _fast_read(data: bytes) -> IncomingInstance | None:
    """The instance as ``imaging.header`` reads it, when it can and the file is stored as it is.

    None sends the file to pydicom (``_parse``, ``_checked``), which refuses it or reads what
    the header reader does not: every refusal is pydicom's, with its status and message.
    """
    header = header_read(data)
    if header is None:
        return None
    uids = [_uid(header, tag) for tag in _UID_TAGS]
    if None in uids or uids[3] not in STORAGE_SOP_CLASSES or not _pixels_complete(header):
        return None
    return IncomingInstance(
        data=data, header=header, content_sha256=content_sha256(data), study_instance_uid=uids[0],
        series_instance_uid=uids[1], sop_instance_uid=uids[2], sop_class_uid=uids[3],
        transfer_syntax_uid=header.transfer_syntax,
    )


def _uid(header: Header, tag: int) -> str | None:
    """A valid UID as pydicom reads it (trailing NULs and spaces dropped), else None."""
    raw = header.raw(tag)
    if raw is None or header.vr(tag) != "UI":
        return None
    value = raw.decode("latin-1").rstrip("\x00 ")
    return value if is_uid(value) else None


def _pixels_complete(header: Header) -> bool:
    """``_check_pixel_data``'s verdict when the header reader is sure of it, else False."""
    if PIXEL_DATA not in header:
        return False
    frames = header.integer(_tag("NumberOfFrames"))
    if frames is False:
        return False
    frames = max(1, frames or 1)
    if header.transfer_syntax in NATIVE:
        if header.fragments is not None:
            return False
        values = [header.integer(_tag(keyword)) for keyword in ("BitsAllocated", "Rows", "Columns", "SamplesPerPixel")]
        if any(value is False or value is None for value in values[:3]) or values[3] is False:
            return False
        bits, rows, columns, samples = values
        count = rows * columns * (samples or 1) * frames
        photometric = header.raw(_tag("PhotometricInterpretation"))
        if photometric is not None:
            if header.vr(_tag("PhotometricInterpretation")) != "CS":
                return False
            if photometric.rstrip(b" \x00") == b"YBR_FULL_422":
                count = count * 2 // 3
        return header.length(PIXEL_DATA) >= (count * bits + 7) // 8
    return header.transfer_syntax in ENCAPSULATED and header.fragments is not None and header.fragments >= frames


_UID_TAGS = (0x0020000D, 0x0020000E, 0x00080018, 0x00080016)  # Study, Series, SOP Instance, SOP Class


def _uid_or_empty(value) -> str:
    text = str(value or "")
    return text if is_uid(text) else ""


def _checked(data: bytes, dataset: Dataset) -> IncomingInstance:
    meta = dataset.file_meta
    sop_class = str(dataset.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID") or "")
    transfer_syntax = str(meta.get("TransferSyntaxUID") or "")
    uids = {keyword: str(dataset.get(keyword) or "")
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    for keyword, value in uids.items():
        if not is_uid(value):
            raise InstanceRefused(CANNOT_UNDERSTAND, f"{keyword} is missing or not a valid UID")
    if sop_class not in STORAGE_SOP_CLASSES:
        raise InstanceRefused(SOP_CLASS_NOT_SUPPORTED, f"SOP class {sop_class or '(none)'} is not stored here")
    if transfer_syntax not in TRANSFER_SYNTAXES:
        raise InstanceRefused(TRANSFER_SYNTAX_NOT_SUPPORTED,
                              f"Transfer syntax {transfer_syntax or '(none)'} is not supported")
    _check_pixel_data(dataset, transfer_syntax)
    return IncomingInstance(
        data=data, dataset=dataset, content_sha256=content_sha256(data),
        study_instance_uid=uids["StudyInstanceUID"], series_instance_uid=uids["SeriesInstanceUID"],
        sop_instance_uid=uids["SOPInstanceUID"], sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
    )


def content_sha256(data: bytes) -> str:
    """SHA-256 of the data set after the file meta group (same for DIMSE and STOW copies)."""
    return hashlib.sha256(data[_meta_end(data):]).hexdigest()


def _meta_end(data: bytes) -> int:
    """Offset of the first byte after the file meta group (group length says where)."""
    if data[128:132] != b"DICM" or data[_PREAMBLE:_PREAMBLE + 4] != b"\x02\x00\x00\x00":
        return 0
    length = int.from_bytes(data[_PREAMBLE + 8:_PREAMBLE + 12], "little")
    return _PREAMBLE + 12 + length


def _parse(data: bytes) -> Dataset:
    if len(data) < _PREAMBLE + 12 or data[128:132] != b"DICM":
        raise InstanceRefused(CANNOT_UNDERSTAND, "Not a DICOM Part 10 file (no DICM prefix)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(io.BytesIO(data))
            # Reading is lazy for some values; touch the ones the store relies on.
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                dataset.get(keyword)
    except Exception as error:  # noqa: BLE001 - whatever pydicom raises on a damaged file (struct.error, zlib.error, OSError…)
        raise InstanceRefused(CANNOT_UNDERSTAND, f"The file cannot be read as DICOM ({type(error).__name__})")
    return dataset


def _check_pixel_data(dataset: Dataset, transfer_syntax: str) -> None:
    """Every stored SOP class is an image: its Pixel Data must be present and complete."""
    if "PixelData" not in dataset:
        raise InstanceRefused(CANNOT_UNDERSTAND, "Pixel Data is missing (truncated file?)")
    frames = _frames(dataset)
    pixels = dataset.PixelData
    if transfer_syntax in UNCOMPRESSED:
        expected = _native_length(dataset, frames)
        if expected is None or len(pixels) < expected:
            raise InstanceRefused(CANNOT_UNDERSTAND, "Pixel Data is shorter than the image it describes")
        return
    try:
        fragments = sum(1 for _ in generate_fragments(pixels))
    except (ValueError, EOFError, TypeError) as error:
        raise InstanceRefused(CANNOT_UNDERSTAND, f"Encapsulated Pixel Data is damaged ({error})") from None
    if fragments < frames:  # every frame takes at least one fragment
        raise InstanceRefused(CANNOT_UNDERSTAND, "Encapsulated Pixel Data has fewer fragments than frames")


def _frames(dataset: Dataset) -> int:
    try:
        return max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _native_length(dataset: Dataset, frames: int) -> int | None:
    try:
        bits = int(dataset.BitsAllocated)
        count = int(dataset.Rows) * int(dataset.Columns) * int(dataset.get("SamplesPerPixel") or 1) * frames
    except (AttributeError, TypeError, ValueError):
        return None
    if dataset.get("PhotometricInterpretation") in ("YBR_FULL_422",):
        count = count * 2 // 3
    return (count * bits + 7) // 8
