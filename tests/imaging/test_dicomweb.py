"""STOW-RS, QIDO-RS and WADO-RS against a live server, spoken by dicomweb-client (PyPI)."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image

from imaging.blobs import blob_exists, blob_get
from imaging.models import Instance, Series, Study
from imaging.pixels import frames_decoded
from tests.imaging.conftest import (
    ALL_FILES,
    CT,
    MR,
    US_JPEG2K,
    US_MULTIFRAME,
    US_PALETTE,
    US_RGB,
    dicom_dataset,
    encoded,
)

STOW_OK = 200


@pytest.fixture
def stored(web):
    """All six files stored through STOW-RS in one request."""
    datasets = [dicom_dataset(name) for name in ALL_FILES]
    response = web.store_instances(datasets=datasets)
    return {name: ds for name, ds in zip(ALL_FILES, datasets)}, response


def test_stow_stores_each_instance_with_rows_and_a_file(stored):
    datasets, response = stored

    referenced = response.ReferencedSOPSequence
    assert sorted(item.ReferencedSOPInstanceUID for item in referenced) == sorted(
        ds.SOPInstanceUID for ds in datasets.values())
    assert "FailedSOPSequence" not in response
    assert all(item.RetrieveURL.endswith(f"/instances/{item.ReferencedSOPInstanceUID}") for item in referenced)
    assert Study.objects.count() == 5  # the JPEG 2000 and RGB files share one study and series
    assert Series.objects.count() == 5
    assert Instance.objects.count() == 6
    for name, dataset in datasets.items():
        row = Instance.objects.get(sop_instance_uid=dataset.SOPInstanceUID)
        assert row.study.organization_id == "hosp-a"
        assert blob_exists(key=row.storage_key)
        assert blob_get(key=row.storage_key) == encoded(dataset), name


def test_the_stow_answer_is_200_dicom_json(live_server, hospital_token):
    body, content_type = _multipart([encoded(dicom_dataset(CT))])

    response = requests.post(f"{live_server.url}/dicomweb/studies", data=body, timeout=30, headers={
        "Authorization": f"Bearer {hospital_token}", "Content-Type": content_type})

    assert response.status_code == STOW_OK
    assert response.headers["Content-Type"] == "application/dicom+json"
    answer = response.json()
    assert answer["00081199"]["vr"] == "SQ"
    assert answer["00081199"]["Value"][0]["00081155"]["Value"] == [dicom_dataset(CT).SOPInstanceUID]


def test_wado_returns_the_instances_as_stored(web, stored):
    datasets, _ = stored
    for name in (US_MULTIFRAME, US_PALETTE, CT):
        original = datasets[name]

        retrieved = web.retrieve_instance(original.StudyInstanceUID, original.SeriesInstanceUID,
                                          original.SOPInstanceUID)

        assert retrieved.SOPInstanceUID == original.SOPInstanceUID
        assert retrieved.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert retrieved.PixelData == original.PixelData


def test_wado_study_and_series_return_every_instance(web, stored):
    datasets, _ = stored
    shared = datasets[US_JPEG2K]

    study = web.retrieve_study(shared.StudyInstanceUID)
    series = web.retrieve_series(shared.StudyInstanceUID, shared.SeriesInstanceUID)

    expected = {datasets[US_JPEG2K].SOPInstanceUID, datasets[US_RGB].SOPInstanceUID}
    assert {ds.SOPInstanceUID for ds in study} == expected
    assert {ds.SOPInstanceUID for ds in series} == expected
    by_uid = {ds.SOPInstanceUID: ds for ds in study}
    assert by_uid[datasets[US_RGB].SOPInstanceUID].PixelData == datasets[US_RGB].PixelData


def test_wado_metadata_is_dicom_json_without_bulk_data(web, stored):
    datasets, _ = stored
    original = datasets[US_MULTIFRAME]

    metadata = web.retrieve_study_metadata(original.StudyInstanceUID)

    assert len(metadata) == 1
    item = pydicom.Dataset.from_json(metadata[0])
    assert item.SOPInstanceUID == original.SOPInstanceUID
    assert item.NumberOfFrames == 30
    assert "PixelData" not in item


def test_frames_come_back_decoded_as_octet_stream(web, stored):
    datasets, _ = stored
    original = datasets[US_MULTIFRAME]
    expected = pydicom.dcmread(pydicom.data.get_testdata_file(US_MULTIFRAME)).pixel_array

    frames = list(web.retrieve_instance_frames(original.StudyInstanceUID, original.SeriesInstanceUID,
                                               original.SOPInstanceUID, frame_numbers=[1, 30]))

    assert len(frames) == 2
    assert np.frombuffer(frames[0], np.uint8).reshape(expected[0].shape).tolist() == expected[0].tolist()
    assert np.frombuffer(frames[1], np.uint8).reshape(expected[29].shape).tolist() == expected[29].tolist()


def test_native_frames_are_the_stored_pixel_bytes(web, stored):
    datasets, _ = stored
    original = datasets[CT]

    frames = list(web.retrieve_instance_frames(original.StudyInstanceUID, original.SeriesInstanceUID,
                                               original.SOPInstanceUID, frame_numbers=[1]))

    assert frames == [original.PixelData]


def test_compressed_frames_can_be_asked_for_as_stored(web, stored):
    datasets, _ = stored
    original = datasets[US_MULTIFRAME]

    frames = list(web.retrieve_instance_frames(
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID,
        frame_numbers=[2], media_types=(("image/jpeg", "1.2.840.10008.1.2.4.50"),)))

    assert frames[0][:2] == b"\xff\xd8"  # a JPEG codestream, untouched
    assert frames[0] == list(pydicom.encaps.generate_frames(original.PixelData, number_of_frames=30))[1]


@pytest.mark.parametrize(("media_type", "format_name"), [("image/png", "PNG"), ("image/jpeg", "JPEG")])
def test_rendered_frames_are_images_a_viewer_can_show(web, stored, media_type, format_name):
    datasets, _ = stored
    for name in (US_MULTIFRAME, US_PALETTE, MR):
        original = datasets[name]

        data = web.retrieve_instance_frames_rendered(
            original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID,
            frame_numbers=[1], media_types=(media_type,))

        image = Image.open(io.BytesIO(data))
        assert image.format == format_name
        assert image.size == (original.Columns, original.Rows)


def test_a_frame_outside_the_instance_is_404(live_server, hospital_token, stored):
    datasets, _ = stored
    ds = datasets[CT]
    url = (f"{live_server.url}/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
           f"/instances/{ds.SOPInstanceUID}/frames/2")

    response = requests.get(url, headers={"Authorization": f"Bearer {hospital_token}"}, timeout=30)

    assert response.status_code == 404
    assert response.json()["errorMessage"] == "Frame 2 is outside 1..1"


def test_qido_studies_match_patient_date_modality_and_uid(web, stored):
    datasets, _ = stored
    us_study = datasets[US_JPEG2K].StudyInstanceUID

    def uids(**filters):
        return sorted(item["0020000D"]["Value"][0] for item in web.search_for_studies(**filters))

    assert uids(search_filters={"PatientID": "13US1"}) == [us_study]
    assert uids(search_filters={"PatientID": "13US*"}) == [us_study]
    assert uids(search_filters={"ModalitiesInStudy": "CT"}) == [datasets[CT].StudyInstanceUID]
    assert uids(search_filters={"StudyDate": "20040101-20041231"}) == sorted(
        {datasets[name].StudyInstanceUID for name in (US_JPEG2K, CT, MR)})
    assert uids(search_filters={"StudyDate": "20110525"}) == [datasets[US_PALETTE].StudyInstanceUID]
    assert uids(search_filters={"StudyInstanceUID": us_study}) == [us_study]
    assert len(uids()) == 5
    assert len(uids(limit=2)) == 2 and len(uids(limit=2, offset=4)) == 1


def test_qido_study_answer_has_counts_modalities_and_retrieve_url(web, stored):
    datasets, _ = stored
    study_uid = datasets[US_JPEG2K].StudyInstanceUID

    [item] = web.search_for_studies(search_filters={"StudyInstanceUID": study_uid})

    assert item["00201206"]["Value"] == [1]  # NumberOfStudyRelatedSeries
    assert item["00201208"]["Value"] == [2]  # NumberOfStudyRelatedInstances
    assert item["00080061"]["Value"] == ["US"]
    assert item["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{study_uid}")
    assert item["00100020"]["Value"] == ["13US1"]


def test_qido_series_and_instances_with_includefield(web, stored):
    datasets, _ = stored
    ds = datasets[US_MULTIFRAME]

    series = web.search_for_series(ds.StudyInstanceUID)
    instances = web.search_for_instances(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                         fields=["NumberOfFrames", "Manufacturer"])
    everywhere = web.search_for_instances(search_filters={"SOPInstanceUID": ds.SOPInstanceUID})

    assert [item["0020000E"]["Value"] for item in series] == [[ds.SeriesInstanceUID]]
    assert series[0]["00201209"]["Value"] == [1]
    assert [item["00080018"]["Value"] for item in instances] == [[ds.SOPInstanceUID]]
    assert instances[0]["00280008"]["Value"] == [30]
    assert instances[0]["00080070"]["Value"] == [ds.Manufacturer]
    assert len(everywhere) == 1


def test_qido_accession_number_and_a_bad_date_range(live_server, hospital_token, web, stored):
    assert web.search_for_studies(search_filters={"AccessionNumber": "NO-SUCH"}) == []

    response = requests.get(f"{live_server.url}/dicomweb/studies?StudyDate=2004-01-01",
                            headers={"Authorization": f"Bearer {hospital_token}"}, timeout=30)

    assert response.status_code == 400
    assert "YYYYMMDD" in response.json()["errorMessage"]


def test_decoded_frames_match_pydicom(stored):
    datasets, _ = stored
    row = Instance.objects.get(sop_instance_uid=datasets[US_PALETTE].SOPInstanceUID)

    [frame] = frames_decoded(blob_get(key=row.storage_key), [1])

    assert frame == datasets[US_PALETTE].PixelData


def _multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = "carrack-test-boundary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
                    for part in parts) + b"--" + boundary.encode() + b"--\r\n"
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'
