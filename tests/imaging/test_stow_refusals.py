"""STOW-RS refusals and conflicts: the standard's status codes, and nothing stored by a refusal."""

from __future__ import annotations

import pydicom
import pytest

from access.models import Role
from imaging.models import Instance
from tests.imaging.conftest import (
    CT,
    FAILED,
    HOSPITAL,
    MR,
    REFERENCED,
    US_MULTIFRAME,
    assert_nothing_stored,
    dicom_bytes,
    dicom_dataset,
    encoded,
    reasons,
    role_token,
    stored_files,
)
from tests.imaging.test_dicomweb_access import stow

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(db) -> str:
    return role_token("int-a", Role.INTEGRATION, organization=HOSPITAL)


@pytest.mark.parametrize(("data", "reason"), [
    (b"this is not DICOM at all" * 20, 0xC000),
    (dicom_bytes(US_MULTIFRAME)[:150_000], 0xC000),  # truncated inside the Pixel Data
    (dicom_bytes(CT)[:2_000], 0xC000),  # truncated before the Pixel Data
    (dicom_bytes("rtplan.dcm"), 0x0122),  # RT Plan: not a SOP class stored here
], ids=["not-dicom", "truncated-pixels", "truncated-header", "wrong-sop-class"])
def test_a_bad_file_is_refused_with_its_reason_and_leaves_nothing(client, token, dicom_folder, data, reason):
    response = stow(client, token, data)

    assert response.status_code == 409
    assert reasons(response) == [reason]
    assert REFERENCED not in response.json()
    assert_nothing_stored(dicom_folder)


def test_the_wrong_sop_class_failure_names_the_instance(client, token):
    rtplan = pydicom.dcmread(pydicom.data.get_testdata_file("rtplan.dcm"))

    response = stow(client, token, dicom_bytes("rtplan.dcm"))

    [item] = response.json()[FAILED]["Value"]
    assert item["00081155"]["Value"] == [rtplan.SOPInstanceUID]
    assert item["00081150"]["Value"] == [rtplan.SOPClassUID]


def test_one_bad_part_among_good_ones_is_202_and_the_good_ones_are_stored(client, token, dicom_folder):
    response = stow(client, token, dicom_bytes(CT), b"garbage" * 50, dicom_bytes(MR))

    assert response.status_code == 202
    assert reasons(response) == [0xC000]
    assert len(response.json()[REFERENCED]["Value"]) == 2
    assert Instance.objects.count() == 2
    assert len(stored_files(dicom_folder)) == 2


def test_storing_the_same_bytes_twice_is_200_both_times(client, token, dicom_folder):
    first = stow(client, token, dicom_bytes(CT))
    second = stow(client, token, dicom_bytes(CT))

    assert first.status_code == second.status_code == 200
    assert Instance.objects.count() == 1 and len(stored_files(dicom_folder)) == 1


def test_different_content_under_the_same_uid_is_a_duplicate_failure(client, token, dicom_folder):
    stow(client, token, dicom_bytes(CT))
    original = stored_files(dicom_folder)[0].read_bytes()
    changed = dicom_dataset(CT)
    changed.PixelData = bytes(len(changed.PixelData))

    response = stow(client, token, encoded(changed))

    assert response.status_code == 409
    assert reasons(response) == [0x0111]
    assert stored_files(dicom_folder)[0].read_bytes() == original


def test_an_instance_of_another_study_than_the_url_is_refused(client, token, dicom_folder):
    ct = dicom_dataset(CT)

    wrong = stow(client, token, dicom_bytes(MR), study_uid=ct.StudyInstanceUID)
    right = stow(client, token, dicom_bytes(CT), study_uid=ct.StudyInstanceUID)

    assert wrong.status_code == 409 and reasons(wrong) == [0xA900]
    assert right.status_code == 200
    assert right.json()["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{ct.StudyInstanceUID}")
    assert Instance.objects.count() == 1


def test_bodies_that_are_not_multipart_dicom_are_415_or_400(client, token):
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    plain = client.post("/dicomweb/studies", dicom_bytes(CT), content_type="application/dicom", **auth)
    json_parts = client.post("/dicomweb/studies", b"--x\r\n\r\n{}\r\n--x--",
                             content_type='multipart/related; type="application/dicom+json"; boundary=x', **auth)
    empty = client.post("/dicomweb/studies", b"--x--\r\n",
                        content_type='multipart/related; type="application/dicom"; boundary=x', **auth)
    cut = client.post("/dicomweb/studies", b"--x\r\nContent-Type: application/dicom\r\n\r\nabc",
                      content_type='multipart/related; type="application/dicom"; boundary=x', **auth)

    assert plain.status_code == 415 and json_parts.status_code == 415
    assert empty.status_code == 400 and cut.status_code == 400
    assert all("errorMessage" in r.json() for r in (plain, json_parts, empty, cut))
    assert not Instance.objects.exists()
