"""Redis paused: C-STORE and STOW-RS answer at once, nothing is lost, the sweep catches up.

The broker here is a Redis of this test's own (never the session's), paused with SIGSTOP:
a paused Redis accepts connections and never answers, the worst case for a publisher. While
it is paused a pynetdicom SCU sends C-STOREs one after another to the in-process SCP and a
STOW-RS request is posted; after SIGCONT the sweep publishes what never reached the broker
and a real Celery worker (a process, on this Redis) makes each de-identified copy once.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
import redis
from django.db import connection
from django.test import Client
from pydicom.uid import generate_uid
from pynetdicom import AE

from access.models import Role
from config.celery import app
from config.stack.services import BASE_DIR, RedisServer, free_port
from imaging import services
from imaging.models import Instance
from imaging.services import deid
from imaging.tasks import deidentify_pending
from ledger.models import AuditEntry
from tests.imaging.conftest import (
    CALLING_AE,
    HOSPITAL,
    US_PALETTE,
    dicom_dataset,
    encoded,
    role_token,
    scp_serving,
    wait_idle,
)
from tests.imaging.test_dicomweb_access import stow

pytestmark = pytest.mark.django_db(transaction=True)

PAUSE_SECONDS = 30.0
ANSWER_LIMIT = 2.0
SUCCESS = 0x0000


@pytest.fixture
def broker(tmp_path):
    """A Redis of this test's own, made the Celery app's broker for the test."""
    server = RedisServer(name="broker", state_dir=tmp_path / "broker", port=free_port())
    server.start()
    previous = app.conf.broker_url
    _use_broker(server.url)
    yield server
    os.killpg(server.process.pid, signal.SIGCONT)
    _use_broker(previous)
    server.stop()


def _use_broker(url: str) -> None:
    """Point the app's publishing at ``url``: new connection and producer pools, a fresh gate."""
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None
    deid._GATE.reset()


@pytest.fixture
def dicom_folder(settings, tmp_path):
    """Instance files in this test's folder: the state folder the worker process is given."""
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tmp_path / "state" / "dicom", "allow_overwrite": True}}}
    return tmp_path / "state"


@pytest.fixture
def scp(broker, settings):
    settings.IMAGING_DEIDENTIFY_ON_INGEST = True
    yield from scp_serving(settings, {CALLING_AE: HOSPITAL})


def paused(server: RedisServer):
    os.killpg(server.process.pid, signal.SIGSTOP)


def resumed(server: RedisServer):
    os.killpg(server.process.pid, signal.SIGCONT)


def fresh(name: str):
    dataset = dicom_dataset(name)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


def c_store_for(assoc, seconds: float) -> list[tuple[str, int, float]]:
    """C-STOREs one after another for ``seconds``: (SOP Instance UID, status, answer time) each."""
    sent, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        dataset = fresh(US_PALETTE)
        started = time.monotonic()
        status = assoc.send_c_store(dataset).Status
        sent.append((dataset.SOPInstanceUID, status, time.monotonic() - started))
        time.sleep(0.1)
    return sent


def worker_process(url: str, state_dir, log_path) -> subprocess.Popen:
    """A real Celery worker on this test's Redis and the test database."""
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test", REDIS_URL=url,
               DATABASE_URL=database_url, CARRACK_STATE_DIR=str(state_dir))
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
             "--hostname", f"broker-outage-{os.getpid()}@%h", "--loglevel", "INFO",
             "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for_copies(expected: int, worker: subprocess.Popen, log_path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while Instance.objects.exclude(deid_storage_key="").count() < expected:
        if worker.poll() is not None or time.monotonic() > deadline:
            refusals = list(Instance.objects.exclude(deid_error="").values_list("deid_error", flat=True)[:3])
            pytest.fail(f"copies not made (worker exit {worker.poll()}, refusals {refusals}): "
                        f"{log_path.read_text(errors='replace')[-1500:]}")
        time.sleep(0.5)


def queue_drained(url: str, timeout: float = 60.0) -> None:
    """Until the worker holds no message: none waiting, none delivered and unacknowledged."""
    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + timeout
    while client.llen("celery") or client.hlen("unacked"):
        assert time.monotonic() < deadline, "messages still queued"
        time.sleep(0.2)


def test_redis_paused_30s_c_store_answers_at_once_and_the_sweep_makes_each_copy_once(
        scp, broker, dicom_folder, settings, caplog, tmp_path):
    token = role_token("int-outage", Role.INTEGRATION, organization=HOSPITAL)
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(dicom_dataset(US_PALETTE).SOPClassUID, dicom_dataset(US_PALETTE).file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CARRACK")
    assert assoc.is_established

    # Given the broker up: a C-STORE's copy is published at once and its row marked queued.
    [(before_uid, before_status, _)] = c_store_for(assoc, 0.01)
    assert before_status == SUCCESS
    assert Instance.objects.get(sop_instance_uid=before_uid).deid_queued_at is not None

    # When Redis is paused for 30 s while the device keeps sending, and one STOW-RS request comes.
    paused(broker)
    paused_at = time.monotonic()
    sent = c_store_for(assoc, PAUSE_SECONDS / 2)
    stow_started = time.monotonic()
    stow_parts = [fresh(US_PALETTE) for _ in range(3)]
    response = stow(Client(), token, *(encoded(dataset) for dataset in stow_parts))
    stow_seconds = time.monotonic() - stow_started
    sent += c_store_for(assoc, PAUSE_SECONDS - (time.monotonic() - paused_at))
    paused_for = time.monotonic() - paused_at
    resumed(broker)
    assoc.release()
    wait_idle(scp)

    # Then every C-STORE answered Success in under 2 s, and the STOW-RS request too.
    times = sorted(seconds for _, _, seconds in sent)
    p95 = times[int(0.95 * (len(times) - 1))]
    print(f"\nRedis paused {paused_for:.1f} s. C-STOREs: {len(sent)} sent, "
          f"{sum(status == SUCCESS for _, status, _ in sent)} Success, max {times[-1]:.3f} s, "
          f"p95 {p95:.3f} s, median {statistics.median(times):.3f} s; STOW-RS of 3: "
          f"{response.status_code} in {stow_seconds:.3f} s")
    assert paused_for >= PAUSE_SECONDS and len(sent) >= 50
    assert [status for _, status, _ in sent] == [SUCCESS] * len(sent)
    assert times[-1] < ANSWER_LIMIT
    assert response.status_code == 200 and stow_seconds < ANSWER_LIMIT
    # every instance committed and audited, one entry per C-STORE, none published while paused
    uids = [uid for uid, _, _ in sent] + [dataset.SOPInstanceUID for dataset in stow_parts]
    rows = Instance.objects.filter(sop_instance_uid__in=uids)
    assert rows.count() == len(uids)
    assert rows.filter(deid_queued_at__isnull=False).count() == 0
    assert AuditEntry.objects.filter(agent=f"urn:dicom:ae:{CALLING_AE}").count() == len(sent) + 1
    # one warning per outage, however many instances
    warnings = [r for r in caplog.records if r.name == deid.__name__ and "broker unreachable" in r.getMessage()]
    assert len(warnings) == 1

    # When the sweep runs (as beat would, once the grace has passed) and a real worker consumes.
    settings.IMAGING_DEID_SWEEP_GRACE_SECONDS = 0
    deid._GATE.reset()  # the backoff is per process: the sweep runs on a worker, not here
    published = deidentify_pending()
    assert published == len(uids)
    assert rows.filter(deid_queued_at__isnull=True).count() == 0
    assert services.instances_deidentify_pending(older_than_seconds=0) == []
    worker = worker_process(broker.url, dicom_folder, tmp_path / "worker.log")
    try:
        wait_for_copies(len(uids) + 1, worker, tmp_path / "worker.log")
        queue_drained(broker.url)
        first = dict(Instance.objects.values_list("pk", "deidentified_at"))
        # and every copy is published once more (a duplicate delivery): nothing is made twice
        assert services.deidentify_queue(sorted(first), wait=30.0) == len(first)
        queue_drained(broker.url)
    finally:
        worker.terminate()
        worker.wait(30)

    # Then each instance has exactly one copy, made once.
    assert dict(Instance.objects.values_list("pk", "deidentified_at")) == first
    assert Instance.objects.filter(deid_storage_key="").count() == 0
    assert Instance.objects.exclude(deid_error="").count() == 0
    assert all((dicom_folder / "dicom" / key).exists()
               for key in Instance.objects.values_list("deid_storage_key", flat=True))
