"""Imaging settings: object storage by setting, the de-identification secret, `make run`'s SCP."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from django.conf import settings

from config.stack.services import BASE_DIR
from config.stack.supervisor import app_processes, default_ports
from tests.test_settings import import_production

SHOW_STORAGE = "import json, config.settings.test as s; print(json.dumps(s.STORAGES['dicom'], default=str))"


def dicom_storage_with(**env: str) -> dict:
    result = subprocess.run([sys.executable, "-c", SHOW_STORAGE], cwd=BASE_DIR, env={**os.environ, **env},
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def test_files_go_under_the_state_folder_by_default():
    storage = dicom_storage_with(CARRACK_STATE_DIR="/srv/carrack-state")

    assert storage["BACKEND"] == "django.core.files.storage.FileSystemStorage"
    assert storage["OPTIONS"]["location"] == "/srv/carrack-state/dicom"
    assert storage["OPTIONS"]["allow_overwrite"] is True


def test_an_s3_compatible_store_is_chosen_by_setting():
    storage = dicom_storage_with(IMAGING_STORAGE="s3", IMAGING_S3_BUCKET="carrack-dicom",
                                 IMAGING_S3_ENDPOINT_URL="http://127.0.0.1:9000")

    assert storage["BACKEND"] == "storages.backends.s3.S3Storage"
    assert storage["OPTIONS"]["bucket_name"] == "carrack-dicom"
    assert storage["OPTIONS"]["endpoint_url"] == "http://127.0.0.1:9000"
    assert storage["OPTIONS"]["file_overwrite"] is True


def test_tests_have_a_development_deid_secret_only():
    assert settings.DEID_SECRET.startswith("dev-only")


def test_production_refuses_to_start_without_a_deid_secret():
    missing = import_production(DEID_SECRET=None)
    weak = import_production(DEID_SECRET="dev-only-deid-secret-not-for-real-data")

    for result in (missing, weak):
        assert result.returncode != 0
        assert "DEID_SECRET must be set" in result.stderr


def test_production_starts_with_a_deid_secret():
    result = import_production(DEID_SECRET="d" * 40)

    assert result.returncode == 0, result.stderr


def test_make_run_starts_the_dicom_scp_on_its_port(tmp_path, monkeypatch):
    monkeypatch.delenv("CARRACK_DICOM_PORT", raising=False)
    port = default_ports()["dicom"]

    processes = {process.name: process for process in app_processes(tmp_path, {}, 8000, dicom_port=port)}

    assert port == 11112
    scp = processes["dicom-scp"]
    assert scp.port == 11112
    assert scp.argv[-3:] == ["dicom_scp", "--port", "11112"]


def test_the_dicom_port_can_be_moved(monkeypatch):
    monkeypatch.setenv("CARRACK_DICOM_PORT", "12345")

    assert default_ports()["dicom"] == 12345
