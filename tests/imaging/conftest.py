"""Imaging fixtures: pydicom's own test files, tokens per role, a DICOMweb client, an SCP."""

from __future__ import annotations

import io
import time

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from django.contrib.auth import get_user_model
from oauth2_provider.models import Application
from pydicom.data import get_testdata_file

from access.models import AccessProfile, Role
from access.services import client_ensure, token_ensure
from config.stack.services import free_port
from imaging import services
from imaging.dimse import scp_start

# Real files shipped with pydicom, by explicit name.
US_MULTIFRAME = "examples_ybr_color.dcm"  # US Multi-frame, 30 frames, JPEG baseline
US_JPEG2K = "examples_jpeg2k.dcm"  # US Image, JPEG 2000 (same study and series as RGB)
US_RGB = "examples_rgb_color.dcm"  # US Image, explicit little endian RGB
US_PALETTE = "examples_palette.dcm"  # US Image, palette color
CT = "CT_small.dcm"
MR = "MR_small.dcm"
ALL_FILES = (US_MULTIFRAME, US_JPEG2K, US_RGB, US_PALETTE, CT, MR)
HOSPITAL, OTHER = "hosp-a", "hosp-b"
CALLING_AE = "US_ROOM1"


def dicom_bytes(name: str) -> bytes:
    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


def dicom_dataset(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(get_testdata_file(name))


def encoded(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def role_token(username: str, role: str | None, *, organization: str | None = None,
               patient: str | None = None, scope: str = "user/*.cruds") -> str:
    """A bearer token of a user with this role (integration: client credentials, system/*)."""
    user = get_user_model().objects.create_user(username, password=None)
    if role is not None:
        AccessProfile.objects.create(user=user, role=role, organization_id=organization, patient_id=patient)
    if role == Role.INTEGRATION:
        scope = scope.replace("user/", "system/")
        app = client_ensure(name=f"{username}-client", owner=user, client_type=Application.CLIENT_CONFIDENTIAL,
                            grant_type=Application.GRANT_CLIENT_CREDENTIALS, scopes=scope)
        return token_ensure(user=None, application=app, scope=scope).token
    if role == Role.PATIENT:
        scope = scope.replace("user/", "patient/")
    app = client_ensure(name=f"{username}-app", owner=user, client_type=Application.CLIENT_PUBLIC,
                        grant_type=Application.GRANT_AUTHORIZATION_CODE, scopes=scope)
    return token_ensure(user=user, application=app, scope=scope).token


def dicomweb(live_server, token: str | None) -> DICOMwebClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return DICOMwebClient(url=f"{live_server.url}/dicomweb", headers=headers)


@pytest.fixture(autouse=True)
def forget_endpoints():
    """The process remembers stored Endpoints; tests empty the database under it."""
    services._ENDPOINTS_SEEN.clear()


@pytest.fixture(autouse=True)
def dicom_folder(settings, tmp_path):
    """Each test stores its files in a folder of its own (the database is emptied; files are not)."""
    folder = tmp_path / "dicom"
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": folder, "allow_overwrite": True}}}
    return folder


def stored_files(folder) -> list:
    return sorted(folder.glob("**/*.dcm"))


@pytest.fixture
def hospital_token(transactional_db) -> str:
    return role_token("integration-a", Role.INTEGRATION, organization=HOSPITAL)


@pytest.fixture
def web(live_server, hospital_token) -> DICOMwebClient:
    return dicomweb(live_server, hospital_token)


@pytest.fixture
def scp(transactional_db, settings):
    """The SCP in this process on a free loopback port; CALLING_AE belongs to HOSPITAL."""
    yield from scp_serving(settings, {CALLING_AE: HOSPITAL})


def scp_serving(settings, ae_organizations: dict[str, str]):
    """Run the SCP on a free loopback port with this AE → organization map and no default."""
    settings.DICOM_AE_ORGANIZATIONS = ae_organizations
    settings.DICOM_DEFAULT_ORGANIZATION = ""
    port = free_port()
    server = scp_start(address="127.0.0.1", port=port)
    server.port = port
    yield server
    server.shutdown()


# STOW-RS response attributes: FailedSOPSequence, ReferencedSOPSequence, FailureReason.
FAILED, REFERENCED, REASON = "00081198", "00081199", "00081197"


def reasons(response) -> list[int]:
    """The FailureReason of each failed instance of a STOW-RS response."""
    return [item[REASON]["Value"][0] for item in response.json().get(FAILED, {}).get("Value", [])]


def assert_nothing_stored(folder) -> None:
    from ehr.models import Resource
    from imaging.models import Instance, Series, Study

    assert not Instance.objects.exists() and not Series.objects.exists() and not Study.objects.exists()
    assert not Resource.objects.filter(resource_type__in=["Patient", "ImagingStudy"]).exists()
    assert stored_files(folder) == []


def wait_idle(server, timeout: float = 10.0) -> None:
    """Until the SCP has finished every association (its end-of-association sync included)."""
    deadline = time.monotonic() + timeout
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server.active_associations, "the SCP still has associations open"
