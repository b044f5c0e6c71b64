"""``manage.py dicom_scp`` as its own process, end to end: echo, store, FHIR, files on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from django.conf import settings
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from config.stack.services import BASE_DIR, free_port, port_is_open
from ehr.models import Resource
from imaging.models import Instance, Study
from tests.imaging.conftest import CALLING_AE, CT, HOSPITAL, US_MULTIFRAME, dicom_dataset


@pytest.fixture
def scp_process(transactional_db, tmp_path):
    database = settings.DATABASES["default"]
    port = free_port()
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test", CARRACK_STATE_DIR=str(tmp_path),
               DATABASE_URL=(f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}"
                             f"/{database['NAME']}"),
               DICOM_AE_ORGANIZATIONS=f"{CALLING_AE}={HOSPITAL}", IMAGING_DEIDENTIFY_ON_INGEST="false")
    process = subprocess.Popen([sys.executable, "manage.py", "dicom_scp", "--port", str(port)], cwd=BASE_DIR,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not port_is_open(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"dicom_scp did not start:\n{process.stdout.read()}")
        time.sleep(0.1)
    process.port, process.state_dir = port, tmp_path
    yield process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(20)


def test_the_scp_process_echoes_stores_and_writes_the_imaging_study(scp_process):
    datasets = [dicom_dataset(US_MULTIFRAME), dicom_dataset(CT)]
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)
    for dataset in datasets:
        ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)

    assoc = ae.associate("127.0.0.1", scp_process.port, ae_title="CARRACK")
    assert assoc.is_established
    echo = assoc.send_c_echo().Status
    statuses = [assoc.send_c_store(dataset).Status for dataset in datasets]
    assoc.release()

    assert echo == 0 and statuses == [0, 0]
    deadline = time.monotonic() + 20
    while Resource.objects.filter(resource_type="ImagingStudy").count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Instance.objects.count() == 2
    for study in Study.objects.all():
        imaging = json.loads(Resource.objects.get(resource_type="ImagingStudy", logical_id=study.fhir_id).text)
        assert imaging["numberOfInstances"] == 1
        assert study.organization_id == HOSPITAL
    files = sorted(path.name for path in (scp_process.state_dir / "dicom").glob("**/*.dcm"))
    assert files == sorted(f"{dataset.SOPInstanceUID}.dcm" for dataset in datasets)
    scp_process.send_signal(signal.SIGTERM)
    output, _ = scp_process.communicate(timeout=20)
    assert f"DICOM SCP CARRACK listening on 127.0.0.1:{scp_process.port}" in output
    assert "Traceback" not in output
