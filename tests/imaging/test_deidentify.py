"""De-identification of real DICOM files (pydicom's own test files): PS3.15 Annex E.

Pure tests of ``imaging.dicom``: no database, no network. Each file gets identifying values of
our own on top of what it carries (names, IDs, addresses, dates, descriptions quoting the
patient, nested sequences, private tags), so that "nothing identifying survives" is checked
against values we know, in the data set and in the written bytes.
"""

from __future__ import annotations

import io
import re
from copy import deepcopy

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageDraw
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedCTImageStorage, JPEGLSLossless, RLELossless

from imaging import deid_tables as table
from imaging.deid_profile import (
    clean_text,
    date_offset_days,
    keyed_uid,
    shift_date,
    shift_datetime,
)
from imaging.dicom import DeidOptions, DicomRefused, deidentify, deidentify_bytes

KEY = b"carrack-test-key-0123456789abcdef"
OTHER_KEY = b"another-test-key-0123456789abcdef"
REAL_FILES = ["examples_ybr_color.dcm", "examples_jpeg2k.dcm", "examples_rgb_color.dcm",
              "examples_palette.dcm", "CT_small.dcm", "MR_small.dcm"]
NO_PIXELS = DeidOptions(clean_pixel_data=False)
BASIC_ONLY = DeidOptions(retain_longitudinal_modified_dates=False, clean_descriptors=False,
                         clean_pixel_data=False)
UID_FORMAT = re.compile(r"2\.25\.(0|[1-9][0-9]*)")
DATE_TAGS = ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate")


def real(name: str) -> Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def with_phi(ds: Dataset, patient_id: str = "MRN98765432") -> Dataset:
    """``ds`` plus identifying values we can look for afterwards, some nested, some private."""
    ds.PatientName = "Zyxwvut^Qwertyuiop"
    ds.PatientID = patient_id
    ds.OtherPatientIDs = "OTHERID5544332"
    ds.PatientBirthDate = "19710203"
    ds.PatientAddress = "12 Fakestreet, Springfield"
    ds.PatientTelephoneNumbers = "5551234567"
    ds.AccessionNumber = "ACC55512345"
    ds.StudyID = "STUDY778899"
    ds.InstitutionName = "Zyxwvut General Hospital"
    ds.InstitutionAddress = "1 Hospital Road, Springfield"
    ds.ReferringPhysicianName = "Referrer^Kwamena"
    ds.PerformingPhysicianName = "Performer^Aloysius"
    ds.OperatorsName = "Sonographer^Brunhilde"
    ds.StationName = "USROOM7XQ"
    ds.StudyDate, ds.SeriesDate, ds.ContentDate = "20160503", "20160503", "20160504"
    ds.AcquisitionDateTime = "20160503121539.123456+0200"
    ds.StudyTime = "120850"
    ds.StudyDescription = "US ABDOMEN liver for Zyxwvut MRN98765432"
    ds.SeriesDescription = "Qwertyuiop follow-up, left kidney"
    ds.ImageComments = "Patient Qwertyuiop Zyxwvut called 5551234567"
    ds.EvaluatorName = "Evaluator^Hieronymus"  # PN outside Table E.1-1: the safety net
    request = Dataset()
    request.RequestedProcedureID = "RPID4455667"
    request.AccessionNumber = "ACC55512345"
    request.ScheduledProcedureStepDescription = "thyroid Zyxwvut"
    ds.RequestAttributesSequence = Sequence([request])
    other = Dataset()
    other.PatientID = "NESTEDID8877665"
    other.IssuerOfPatientID = "Zyxwvut General Hospital"
    ds.OtherPatientIDsSequence = Sequence([other])
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "T-62000", "SRT"
    code.CodeMeaning = "Liver"
    code.add_new(0x00410010, "LO", "ACME PRIVATE")
    code.add_new(0x00411001, "LO", "PRIVNESTED Zyxwvut")
    ds.AnatomicRegionSequence = Sequence([code])
    ds.add_new(0x00090010, "LO", "ACME PRIVATE")
    ds.add_new(0x00091001, "LO", "PRIVATEVALUE Zyxwvut")
    return ds


def phi_values(ds: Dataset) -> set[str]:
    """Every string value (>= 5 characters) of the identifying attributes of ``ds``, nested too.

    Identifying: Table E.1-1 rows except descriptors (their patient words are checked through
    the name and ID values they quote) and times of day; private attributes; person names.
    """
    values: set[str] = set()
    benign: set[str] = set()
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.value in (None, ""):
            continue
        identifying = (elem.tag.is_private or elem.VR == "PN"
                       or (int(elem.tag) in table.BASIC_ACTIONS
                           and int(elem.tag) not in table.CLEAN_DESCRIPTORS))
        items = elem.value if elem.VM > 1 else [elem.value]
        found = {s for s in (str(v).strip() for v in items) if len(s) >= 5}
        (values if identifying and elem.VR != "TM" else benign).update(found)
    values |= {str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)}
    return values - benign  # e.g. "1.000000" in a private tag and in Slice Thickness


def strings(ds: Dataset) -> list[str]:
    found = [str(e.value) for e in ds.iterall() if e.VR not in ("SQ", "OB", "OW", "UN")]
    return found + [str(e.value) for e in ds.file_meta]


def all_uids(ds: Dataset) -> dict[str, str]:
    return {f"{e.tag}": str(e.value) for e in ds.iterall() if e.VR == "UI" and e.value}


# --- nothing identifying survives ---------------------------------------------------------------

@pytest.mark.parametrize("name", REAL_FILES)
def test_no_identifying_value_survives_anywhere(name):
    source = with_phi(real(name))
    options = NO_PIXELS if name in ("examples_jpeg2k.dcm", "examples_rgb_color.dcm") else DeidOptions()
    secrets = phi_values(source)

    data = deidentify_bytes(_part10(source), key=KEY, options=options)

    out = pydicom.dcmread(io.BytesIO(data))
    texts = "\n".join(strings(out))
    assert [s for s in secrets if s in texts] == []
    assert [s for s in secrets if s.encode() in data] == []
    for word in ("Zyxwvut", "Qwertyuiop", "MRN98765432", "5551234567"):
        assert word.encode() not in data and word.lower() not in texts.lower()


def test_private_attributes_are_removed_at_every_depth():
    out = deidentify(with_phi(real("CT_small.dcm")), key=KEY)

    assert [e.tag for e in out.iterall() if e.tag.is_private] == []
    assert "AnatomicRegionSequence" in out and out.AnatomicRegionSequence[0].CodeValue == "T-62000"


def test_identity_removed_and_methods_listed_for_each_option():
    ds = with_phi(real("examples_ybr_color.dcm"))

    full = deidentify(ds, key=KEY, options=DeidOptions(banner_rows=12))
    basic = deidentify(ds, key=KEY, options=BASIC_ONLY)

    assert full.PatientIdentityRemoved == "YES" and basic.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in full.DeidentificationMethodCodeSequence] == [
        "113100", "113101", "113105", "113107"]
    assert {c.CodingSchemeDesignator for c in full.DeidentificationMethodCodeSequence} == {"DCM"}
    assert [c.CodeValue for c in basic.DeidentificationMethodCodeSequence] == ["113100"]
    assert len(full.DeidentificationMethod) == 4 and "top 12 rows" in full.DeidentificationMethod[1]
    assert (full.LongitudinalTemporalInformationModified,
            basic.LongitudinalTemporalInformationModified) == ("MODIFIED", "REMOVED")


def test_basic_profile_actions_on_a_real_ultrasound_file():
    out = deidentify(with_phi(real("examples_ybr_color.dcm")), key=KEY, options=BASIC_ONLY)

    assert out.PatientName == "" and out.AccessionNumber == "" and out.StudyID == ""  # Z
    assert out.PatientID.startswith("ANON-")  # Z, with a keyed dummy that links studies
    for gone in ("OtherPatientIDs", "PatientAddress", "InstitutionName", "OperatorsName",
                 "StationName", "StudyDescription", "ImageComments", "SeriesDate",
                 "RequestAttributesSequence", "OtherPatientIDsSequence"):  # X, X/Z/D -> X
        assert gone not in out, gone
    assert out.StudyDate == "" and out.ContentDate == ""  # Z, and Z/D -> Z (General Image 2C)
    assert out.EvaluatorName == ""  # a person name the table does not list
    assert out.SequenceOfUltrasoundRegions[0].RegionLocationMinX0 == 84  # kept
    assert out.Manufacturer == "SonoSite, Inc."


def test_compound_actions_follow_the_iod():
    """Content Date is Type 1 in enhanced IODs (D), 2C in the General Image module (Z)."""
    classic = real("CT_small.dcm")
    classic.DeviceSerialNumber = "SN-4711-XYZ"
    enhanced = deepcopy(classic)
    enhanced.SOPClassUID = EnhancedCTImageStorage

    out_classic = deidentify(classic, key=KEY, options=BASIC_ONLY)
    out_enhanced = deidentify(enhanced, key=KEY, options=BASIC_ONLY)

    assert out_classic.ContentDate == "" and "DeviceSerialNumber" not in out_classic
    assert out_enhanced.ContentDate == "19000101"
    assert out_enhanced.DeviceSerialNumber == "ANONYMIZED"


def test_patient_sex_neutered_is_kept_empty_for_animals_only():
    human, animal = real("MR_small.dcm"), real("MR_small.dcm")
    human.PatientSexNeutered = animal.PatientSexNeutered = "ALTERED"
    animal.PatientSpeciesDescription = "Canis lupus familiaris"

    assert "PatientSexNeutered" not in deidentify(human, key=KEY)
    assert deidentify(animal, key=KEY).PatientSexNeutered == ""


def test_clean_descriptors_keeps_only_allow_listed_words():
    out = deidentify(with_phi(real("CT_small.dcm")), key=KEY)

    assert out.StudyDescription == "US ABDOMEN liver for"
    assert out.SeriesDescription == "follow-up left kidney"
    assert out.ImageComments == "Patient called"
    assert out.RequestAttributesSequence[0].ScheduledProcedureStepDescription == "thyroid"
    assert "RequestedProcedureID" not in out.RequestAttributesSequence[0]


def test_clean_text_drops_words_of_the_patient_even_when_ordinary():
    assert clean_text("Liver, Brown 2D scan 5MHz 20160503", frozenset({"brown"})) == \
        "Liver 2D scan 5MHz"


# --- UIDs -------------------------------------------------------------------------------------

def _study(n: int) -> list[Dataset]:
    """``n`` instances of one study and series, the last one referencing the first."""
    instances = []
    for i in range(n):
        ds = with_phi(real("CT_small.dcm"))
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.999.{i + 1}"
        instances.append(ds)
    ref = Dataset()
    ref.ReferencedSOPClassUID = instances[0].SOPClassUID
    ref.ReferencedSOPInstanceUID = instances[0].SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = instances[0].SeriesInstanceUID
    series.ReferencedInstanceSequence = Sequence([ref])
    instances[-1].ReferencedSeriesSequence = Sequence([series])
    return instances


def test_uids_stay_linked_across_the_instances_of_a_study():
    outs = [deidentify(ds, key=KEY) for ds in _study(3)]

    for attr in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(o[attr].value) for o in outs}) == 1, attr
    assert len({o.SOPInstanceUID for o in outs}) == 3
    reference = outs[-1].ReferencedSeriesSequence[0]
    assert reference.SeriesInstanceUID == outs[0].SeriesInstanceUID
    assert reference.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == outs[0].SOPInstanceUID
    assert reference.ReferencedInstanceSequence[0].ReferencedSOPClassUID == outs[0].SOPClassUID


def test_uids_are_stable_per_key_and_differ_between_keys():
    ds = real("examples_ybr_color.dcm")

    first, again = all_uids(deidentify(ds, key=KEY)), all_uids(deidentify(ds, key=KEY))
    other = all_uids(deidentify(ds, key=OTHER_KEY))

    assert first == again
    instance_uids = {t: u for t, u in first.items() if u.startswith("2.25.")}
    assert len(instance_uids) >= 3
    assert all(other[t] != u for t, u in instance_uids.items())


def test_uids_are_valid_uuid_derived_uids():
    originals = all_uids(real("examples_ybr_color.dcm"))
    out = deidentify(real("examples_ybr_color.dcm"), key=KEY)

    for tag, uid in all_uids(out).items():
        if uid.startswith("2.25."):
            assert UID_FORMAT.fullmatch(uid) and len(uid) <= 64, tag
            assert pydicom.uid.UID(uid).is_valid
        else:
            assert uid in table.WELL_KNOWN_UIDS, tag  # SOP class, transfer syntax
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert not set(all_uids(out).values()) & (set(originals.values()) - table.WELL_KNOWN_UIDS)
    assert UID_FORMAT.fullmatch(keyed_uid(KEY, "1.2.3")) and len(keyed_uid(KEY, "9" * 64)) <= 64


# --- dates ------------------------------------------------------------------------------------

def test_dates_move_by_one_offset_per_patient():
    first, second = with_phi(real("CT_small.dcm")), with_phi(real("MR_small.dcm"))
    second.StudyDate, second.SeriesDate, second.ContentDate = "20170101", "20170102", "20170103"
    second.AcquisitionDate = "20170104"

    outs = [deidentify(ds, key=KEY) for ds in (first, second)]

    offset = date_offset_days(KEY, "MRN98765432")
    assert 1 <= abs(offset) <= 365
    for source, out in zip((first, second), outs, strict=True):
        for attr in DATE_TAGS:
            if attr in source and source[attr].value:
                assert _days(out[attr].value) - _days(source[attr].value) == offset, attr
        assert out.StudyTime == source.StudyTime  # whole days: time of day unchanged
    assert outs[0].AcquisitionDateTime == shift_date("20160503", offset) + "121539.123456+0200"


def test_another_patient_gets_another_offset():
    out = deidentify(with_phi(real("CT_small.dcm"), patient_id="MRN11112222"), key=KEY)

    assert date_offset_days(KEY, "MRN11112222") != date_offset_days(KEY, "MRN98765432")
    assert _days(out.StudyDate) - _days("20160503") == date_offset_days(KEY, "MRN11112222")


def test_date_shift_edge_cases():
    assert shift_date("20240229", 365) == "20250228"
    assert shift_date("2016.05.03", -3) == "20160430"
    assert shift_date("not a date", 3) is None and shift_date("20161340", 1) is None
    assert shift_datetime("2016", 200) == "2017" and shift_datetime("201605", 20) == "201606"
    assert shift_datetime("20160503235959", 1) == "20160504235959"


def _days(value: str) -> int:
    return np.datetime64(f"{value[:4]}-{value[4:6]}-{value[6:8]}").astype(int)


# --- pixels -----------------------------------------------------------------------------------

TEXT = "ZYXWVUT MRN98765432 03/05/2016"


def burn(image: Image.Image) -> None:
    """Burned-in annotation outside the region: a banner line and a box in the left margin."""
    draw = ImageDraw.Draw(image)
    draw.text((4, 3), TEXT, fill="white")
    draw.rectangle((10, 60, 60, 100), fill="white")


def burned_jpeg_cine() -> Dataset:
    """examples_ybr_color (30-frame JPEG cine, region x 84.., y 31..) with text burned in."""
    ds = real("examples_ybr_color.dcm")
    frames = []
    for frame in ds.pixel_array:
        image = Image.fromarray(frame)
        burn(image)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95, subsampling=1)
        frames.append(buffer.getvalue())
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].is_undefined_length = True
    ds.BurnedInAnnotation = "YES"
    return ds


def test_burned_in_text_is_gone_from_every_jpeg_frame_and_the_image_is_kept():
    source = burned_jpeg_cine()
    before = source.pixel_array.astype(int)
    assert (before[:, :16, :200] > 200).any()  # the text is really there

    out = deidentify(source, key=KEY)

    after = pydicom.dcmread(io.BytesIO(_part10(out))).pixel_array.astype(int)
    assert after.shape == before.shape == (30, 240, 320, 3)
    outside = np.ones((240, 320), bool)
    outside[31:, 84:] = False
    assert after[:, outside].max() <= 16  # 8x8 blocks shared with the image ring a little
    assert after[:, :16, :76].max() <= 2 and after[:, 56:104, 6:64].max() <= 2  # text, box
    inside = np.abs(after[:, 31:, 84:] - before[:, 31:, 84:])
    assert inside.mean() <= 0.5 and np.percentile(inside, 99) <= 3  # one more JPEG pass
    assert out.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
    assert len(out.PixelData) <= 1.05 * len(source.PixelData)  # compact, not 31x
    assert out.BurnedInAnnotation == "NO"
    assert out.LossyImageCompression == "01" and out.LossyImageCompressionMethod[-1] == "ISO_10918_1"
    assert len(out.LossyImageCompressionRatio) == len(out.LossyImageCompressionMethod) == 2


def test_palette_image_is_cleaned_losslessly():
    source = real("examples_palette.dcm")  # regions: x 120-799, y 60-517 (clipped to 350 rows)
    indices = source.pixel_array.copy()
    image = Image.fromarray(indices)
    burn(image)
    burned = np.asarray(image).copy()
    source.PixelData = burned.tobytes()

    out = deidentify(source, key=KEY, options=DeidOptions(banner_rows=70))

    after = pydicom.dcmread(io.BytesIO(_part10(out))).pixel_array
    keep = np.zeros(burned.shape, bool)
    keep[70:, 120:] = True
    assert out.file_meta.TransferSyntaxUID == JPEGLSLossless
    assert np.array_equal(after[keep], burned[keep])  # lossless inside
    assert not after[~keep].any()  # black outside, banner rows included
    assert len(out.PixelData) < len(source.PixelData) / 4
    assert out.LossyImageCompression == "00" and out.BurnedInAnnotation == "NO"


def test_two_frame_rle_ultrasound_is_cleaned_on_both_frames():
    source = real("examples_palette.dcm")
    frame = source.pixel_array
    two = np.stack([frame, frame])
    two[:, :20, :] = 200  # banner
    source.NumberOfFrames = 2
    source.compress(RLELossless, two, generate_instance_uid=False)

    after = deidentify(source, key=KEY).pixel_array

    assert after.shape == two.shape and not after[:, :60, :].any()
    assert np.array_equal(after[:, 60:, 120:], two[:, 60:, 120:])


def test_without_pixel_cleaning_burned_in_annotation_is_not_claimed_absent():
    source = burned_jpeg_cine()

    out = deidentify(source, key=KEY, options=NO_PIXELS)

    assert out.BurnedInAnnotation == "YES" and out.PixelData == source.PixelData
    assert "113101" not in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]


def test_other_modalities_are_not_pixel_cleaned():
    source = real("CT_small.dcm")

    out = deidentify(source, key=KEY)

    assert out.PixelData == source.PixelData and "BurnedInAnnotation" not in out
    assert "113101" not in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]


# --- what is refused --------------------------------------------------------------------------

def test_not_dicom_is_refused():
    with pytest.raises(DicomRefused, match="not a DICOM Part-10 file"):
        deidentify_bytes(b"%PDF-1.7 definitely not DICOM" * 20, key=KEY)


@pytest.mark.parametrize("cut", [0.01, 0.5, 0.9, 0.999])
def test_truncated_files_are_refused(cut):
    data = _file_bytes("examples_ybr_color.dcm")

    with pytest.raises(DicomRefused, match="truncated"):
        deidentify_bytes(data[: int(len(data) * cut)], key=KEY)


def test_file_cut_inside_an_attribute_is_refused():
    data = _file_bytes("CT_small.dcm")

    with pytest.raises(DicomRefused, match="truncated"):
        deidentify_bytes(data[:-500], key=KEY)


def test_ultrasound_without_pixel_data_is_refused_when_pixels_must_be_cleaned():
    ds = real("examples_ybr_color.dcm")
    del ds.PixelData

    with pytest.raises(DicomRefused, match="no Pixel Data"):
        deidentify(ds, key=KEY)
    assert "PixelData" not in deidentify(ds, key=KEY, options=NO_PIXELS)


def test_ultrasound_without_regions_is_refused_when_pixels_must_be_cleaned():
    with pytest.raises(DicomRefused, match="Sequence of Ultrasound Regions"):
        deidentify(real("examples_rgb_color.dcm"), key=KEY)


def test_refusals_do_not_quote_the_file():
    ds = with_phi(real("examples_ybr_color.dcm"))
    del ds.PixelData

    with pytest.raises(DicomRefused) as refused:
        deidentify(ds, key=KEY)
    assert "Zyxwvut" not in str(refused.value) and "MRN" not in str(refused.value)


def test_a_short_key_is_a_programming_error():
    with pytest.raises(ValueError, match="16 bytes"):
        deidentify(real("MR_small.dcm"), key=b"short")


# --- the input and the output as files ----------------------------------------------------------

def test_the_input_data_set_is_left_untouched():
    ds = with_phi(real("examples_ybr_color.dcm"))
    before = deepcopy(ds)

    deidentify(ds, key=KEY)

    assert ds == before and ds.PixelData == before.PixelData
    assert ds.PatientName == "Zyxwvut^Qwertyuiop" and ds.file_meta == before.file_meta


def test_part10_output_has_fresh_file_meta():
    data = deidentify_bytes(_file_bytes("examples_ybr_color.dcm"), key=KEY)

    out = pydicom.dcmread(io.BytesIO(data))
    assert data[128:132] == b"DICM"
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert out.file_meta.ImplementationVersionName == "CARRACK_DEID_1"


def test_non_ascii_character_sets_survive_the_round_trip():
    with open(get_charset_files("chrFren.dcm")[0], "rb") as handle:
        data = handle.read()

    out = pydicom.dcmread(io.BytesIO(deidentify_bytes(data, key=KEY)))

    assert out.SpecificCharacterSet == "ISO_IR 100" and out.PatientName == ""


def _file_bytes(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


def _part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_structured_report_content_is_walked_and_its_references_stay_linked():
    source = real("test-SR.dcm")

    out = deidentify(source, key=KEY)

    names = [str(e.value) for e in out.iterall() if e.VR == "PN" and e.value]
    assert names == ["ANONYMIZED", "ANONYMIZED"]  # Verifying Observer Name: D, in a sequence
    by_value = {}
    for elem in out.iterall():
        if elem.keyword in ("UID", "ReferencedSOPInstanceUID"):
            by_value.setdefault(elem.keyword, set()).add(str(elem.value))
    assert by_value["UID"] <= by_value["ReferencedSOPInstanceUID"]  # both were 1.2.3.4.5
    assert len(out.ContentSequence) == len(source.ContentSequence)


@pytest.mark.parametrize("charset", ["ISO_IR 192", "ISO_IR 100"])
def test_text_in_nested_items_keeps_its_character_set(charset):
    ds = real("MR_small.dcm")
    ds.SpecificCharacterSet = charset
    ds.Manufacturer = "Grüß Straße"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "X1", "99L", "Rückenmark"
    ds.AnatomicRegionSequence = Sequence([code])

    out = pydicom.dcmread(io.BytesIO(deidentify_bytes(_part10(ds), key=KEY)))

    assert out.Manufacturer == "Grüß Straße"
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Rückenmark"


def test_jpeg2000_ultrasound_is_cleaned_without_further_loss():
    source = real("examples_jpeg2k.dcm")  # 640x480 YBR_RCT, no regions of its own
    region = Dataset()
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 100, 50
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = 539, 429
    source.SequenceOfUltrasoundRegions = Sequence([region])
    before = source.pixel_array

    out = deidentify(source, key=KEY)

    after = pydicom.dcmread(io.BytesIO(_part10(out))).pixel_array
    assert out.file_meta.TransferSyntaxUID == JPEGLSLossless and out.BurnedInAnnotation == "NO"
    assert np.array_equal(after[50:430, 100:540], before[50:430, 100:540])
    assert not after[:50].any() and not after[:, :100].any() and not after[430:].any()
