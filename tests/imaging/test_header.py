"""imaging.header against pydicom: where the fast reader reads a file, it reads what pydicom reads.

``instance_read`` takes the header reader's result only when it is sure; otherwise pydicom
reads the file and decides. These tests read pydicom's whole test corpus, cut short at many
places, and synthetic files with unusual values both ways and compare everything the store
uses: the verdict, the UIDs, the hash, the kept attributes as DICOM JSON, texts and numbers.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from imaging import dicomjson, reading
from imaging.header import header_read
from imaging.reading import IncomingInstance, InstanceRefused, instance_read

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom on the odd values, by design
LEVELS = (dicomjson.STUDY_TAGS, dicomjson.SERIES_TAGS, dicomjson.INSTANCE_LEVEL_TAGS)
TEXTS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex", "Modality",
         "SeriesDescription", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "StudyDate",
         "SOPInstanceUID", "ImageType", "PhotometricInterpretation")
INTEGERS = ("SeriesNumber", "InstanceNumber", "NumberOfFrames", "Rows", "Columns", "BitsAllocated",
            "SamplesPerPixel")


def slow_read(data: bytes) -> IncomingInstance | InstanceRefused:
    """What ``instance_read`` answered before the header reader: pydicom only."""
    try:
        dataset = reading._parse(data)
        return reading._checked(data, dataset)
    except InstanceRefused as error:
        return error


def assert_same_values(data: bytes, name: str) -> None:
    """Every value the header reader decodes itself equals pydicom's."""
    header = header_read(data)
    if header is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = pydicom.dcmread(io.BytesIO(data))
        reference = IncomingInstance(data=data, dataset=dataset, content_sha256="", study_instance_uid="",
                                     series_instance_uid="", sop_instance_uid="", sop_class_uid="",
                                     transfer_syntax_uid="")
        fast = IncomingInstance(data=data, header=header, content_sha256="", study_instance_uid="",
                                series_instance_uid="", sop_instance_uid="", sop_class_uid="",
                                transfer_syntax_uid="")
        for tags in LEVELS:
            for tag in tags:
                mine = header.json((tag,))
                if mine is not None:
                    assert mine == dicomjson.kept_json(dataset, (tag,)), (name, tag)
            assert json.dumps(fast.attributes(tags)) == json.dumps(reference.attributes(tags)), name
        for keyword in TEXTS:
            assert fast.text(keyword) == reference.text(keyword), (name, keyword)
        for keyword in INTEGERS:
            assert fast.integer(keyword) == reference.integer(keyword), (name, keyword)


def assert_same_verdict(data: bytes, name: str) -> None:
    fast = reading._fast_read(data)
    slow = slow_read(data)
    if fast is None:
        return
    assert not isinstance(slow, InstanceRefused), f"{name}: pydicom refuses what the header reader accepts"
    for field in ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid",
                  "transfer_syntax_uid", "content_sha256", "data"):
        assert getattr(fast, field) == getattr(slow, field), (name, field)


def corpus() -> list[Path]:
    files = []
    for name in get_testdata_files():
        path = Path(name)
        if path.is_file() and path.stat().st_size < 4_000_000:
            files.append(path)
    return files


def test_the_corpus_is_mostly_read_by_the_header_reader():
    read = [path for path in corpus() if header_read(path.read_bytes()) is not None]
    assert len(read) > 100


@pytest.mark.parametrize("path", corpus(), ids=lambda path: path.name)
def test_pydicom_corpus_whole_and_cut_short(path):
    data = path.read_bytes()
    if data[128:132] != b"DICM" and data[:4] == b"\x02\x00\x00\x00":
        data = b"\x00" * 128 + b"DICM" + data
    cuts = {len(data) - 1, len(data) - 2, len(data) - 4, len(data) - 7, len(data) - 9, len(data) // 2,
            len(data) // 3, 300, 200, 145}
    for size in [len(data), *sorted(cut for cut in cuts if 132 < cut < len(data))]:
        variant = data[:size]
        assert_same_verdict(variant, f"{path.name}[:{size}]")
        assert_same_values(variant, f"{path.name}[:{size}]")


# --- synthetic files with the values pydicom converts in ways of its own --------------------------

def image(**values) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    dataset.SOPInstanceUID = generate_uid()
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns, dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 2, 2, 8, 8, 7
    dataset.SamplesPerPixel, dataset.PixelRepresentation = 1, 0
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = b"\x00\x01\x02\x03"
    for keyword, value in values.items():
        setattr(dataset, keyword, value)
    return dataset


def part10(dataset: Dataset, syntax=ExplicitVRLittleEndian) -> bytes:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def raw_element(dataset: Dataset, keyword: str, vr: str, raw: bytes) -> Dataset:
    """Set a value as bytes, exactly as a device may have written it."""
    from pydicom.dataelem import RawDataElement
    from pydicom.datadict import tag_for_keyword

    tag = pydicom.tag.Tag(tag_for_keyword(keyword))
    dataset._dict[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    return dataset


ODD_VALUES = [
    ("PatientName", "PN", b"Doe^John=Ideo^Graphic"),
    ("PatientName", "PN", b"Doe^John\\Roe^Jane "),
    ("PatientName", "PN", b"Doe^John \x00"),
    ("PatientName", "PN", b"\\Roe"),
    ("PatientName", "PN", b"  "),
    ("PatientName", "PN", b"M\xfcller^Hans"),
    ("PatientName", "PN", b"\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"),
    ("PatientID", "LO", b" 12345 "),
    ("PatientID", "LO", b"12\\34"),
    ("PatientID", "LO", b"12\x0034"),
    ("PatientID", "LO", b""),
    ("StudyDescription", "LO", b"Chest\tPA"),
    ("StudyDescription", "LO", b"a\\\\b "),
    ("AccessionNumber", "SH", b"A1 \x00"),
    ("ImageType", "CS", b"ORIGINAL\\PRIMARY\\\\AXIAL "),
    ("ImageType", "CS", b" ORIGINAL"),
    ("StudyDate", "DA", b"20240102"),
    ("StudyDate", "DA", b"2024-01-02"),
    ("StudyTime", "TM", b"101010.123 "),
    ("PatientAge", "AS", b"042Y"),
    ("SeriesNumber", "IS", b" +7"),
    ("SeriesNumber", "IS", b"12.0"),
    ("SeriesNumber", "IS", b"12.5"),
    ("SeriesNumber", "IS", b"1\\2"),
    ("SeriesNumber", "IS", b"  "),
    ("SeriesNumber", "IS", b"abc"),
    ("SeriesNumber", "IS", b"99999999999999999999"),
    ("InstanceNumber", "IS", b"-0"),
    ("InstanceNumber", "IS", b"5\\"),
    ("NumberOfFrames", "IS", b"0 "),
    ("NumberOfFrames", "IS", b""),
    ("PatientWeight", "DS", b" 70.5 "),
    ("PatientWeight", "DS", b"1e3"),
    ("PatientWeight", "DS", b"-.5"),
    ("PatientWeight", "DS", b"1."),
    ("PatientWeight", "DS", b"nan"),
    ("PatientWeight", "DS", b"1e400"),
    ("PixelSpacing", "DS", b"0.5\\0.5"),
    ("PixelSpacing", "DS", b"0.5\\ 0.5"),
    ("PixelSpacing", "DS", b"0.5\\"),
    ("ImagePositionPatient", "DS", b"-1.5E+02\\+3\\0 "),
    ("Columns", "US", b""),
    ("SamplesPerPixel", "US", b"\x00\x00"),
    ("LargestImagePixelValue", "SS", b"\xff\xff"),
    ("WindowCenter", "DS", b"40\\400"),
    ("SOPInstanceUID", "UI", b"1.2.3.4 \x00"),
    ("SOPInstanceUID", "UI", b" 1.2.3.4"),
    ("SOPInstanceUID", "UI", b"1.2.3\\1.2.4"),
    ("SOPInstanceUID", "LO", b"1.2.3.4"),
    ("PhotometricInterpretation", "CS", b"YBR_FULL_422 "),
    ("PhotometricInterpretation", "LO", b"MONOCHROME2"),
    ("SpecificCharacterSet", "CS", b"ISO_IR 100"),
    ("SpecificCharacterSet", "CS", b"ISO 2022 IR 87"),
]


# An implicit VR file carries no VR: a value under another VR than the dictionary's is explicit only.
ODD_CASES = [pytest.param(keyword, vr, raw, syntax, id=f"{keyword}-{raw!r}-{name}")
             for keyword, vr, raw in ODD_VALUES
             for name, syntax in (("explicit", ExplicitVRLittleEndian), ("implicit", ImplicitVRLittleEndian))
             if syntax == ExplicitVRLittleEndian or vr == pydicom.datadict.dictionary_VR(keyword)]


@pytest.mark.parametrize(("keyword", "vr", "raw", "syntax"), ODD_CASES)
def test_unusual_values_read_as_pydicom_reads_them(keyword, vr, raw, syntax):
    dataset = image()
    data = part10(raw_element(dataset, keyword, vr, raw), syntax)

    assert_same_verdict(data, keyword)
    assert_same_values(data, keyword)


def nested(depth: int) -> Sequence:
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    item.ReferencedSOPInstanceUID = generate_uid()
    if depth:
        item.ReferencedSeriesSequence = nested(depth - 1)
    return Sequence([item, Dataset()])


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian], ids=["explicit", "implicit"])
@pytest.mark.parametrize("undefined", [True, False], ids=["undefined-length", "defined-length"])
def test_sequences_are_walked_as_pydicom_walks_them(syntax, undefined):
    dataset = image(ReferencedStudySequence=nested(3), ReferencedImageSequence=nested(0))
    dataset.DataSetTrailingPadding = b"\x00" * 6
    for element in (dataset["ReferencedStudySequence"], dataset["ReferencedImageSequence"]):
        element.is_undefined_length = undefined
    data = part10(dataset, syntax)

    assert reading._fast_read(data) is not None
    assert_same_verdict(data, "sequences")
    assert_same_values(data, "sequences")
    for cut in range(len(data) - 40, len(data)):
        assert_same_verdict(data[:cut], f"sequences[:{cut}]")


def encapsulated(fragments: list[bytes], frames: int) -> bytes:
    from pydicom.encaps import encapsulate

    dataset = image(NumberOfFrames=frames, PhotometricInterpretation="YBR_FULL_422", SamplesPerPixel=3)
    dataset.PixelData = encapsulate(fragments, has_bot=True) if fragments else b""
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    return part10(dataset, JPEGBaseline8Bit)


@pytest.mark.parametrize(("fragments", "frames"), [
    ([b"\xff\xd8\xff\xd9"] * 3, 3),
    ([b"\xff\xd8\xff\xd9"] * 2, 3),
    ([b"\xff\xd8" + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + b"\xff\xd9"], 1),
], ids=["complete", "fewer-fragments-than-frames", "delimiter-bytes-inside-a-fragment"])
def test_encapsulated_pixel_data_is_counted_as_pydicom_counts_it(fragments, frames):
    data = encapsulated(fragments, frames)

    assert_same_verdict(data, "encapsulated")
    for cut in range(len(data) - 30, len(data)):
        assert_same_verdict(data[:cut], f"encapsulated[:{cut}]")
    assert isinstance(instance_read(data), IncomingInstance) == (len(fragments) + 1 >= frames)


def test_native_pixel_data_shorter_than_its_image_is_refused():
    dataset = image(Rows=4, Columns=4)
    dataset.PixelData = bytes(14)

    with pytest.raises(InstanceRefused) as refused:
        instance_read(part10(dataset))

    assert refused.value.status == 0xC000
