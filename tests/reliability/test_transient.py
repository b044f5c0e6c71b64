"""Database outages at every door: 503 with Retry-After, nothing half-written, then recovery.

Django reaches the test database through a TCP proxy of this module that the test cuts
(every live connection closed, new ones refused, or held unanswered as by a host that is
gone) and restores; the shared PostgreSQL itself is never touched. The web doors run in
the real WSGI handler on one thread of their own, so a persistent connection (CONN_MAX_AGE)
lives through the cut as it does in a gunicorn worker; the DIMSE SCP runs in this process.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from wsgiref.simple_server import WSGIRequestHandler, make_server

import kombu.exceptions
import psycopg
import psycopg.errors
import pytest
import requests
from django.core.handlers.wsgi import WSGIHandler
from django.db import OperationalError, connections
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from access.models import Role
from access.transient import Fault, fault_of
from ehr.models import Resource, ResourceVersion
from imaging import services as imaging_services
from imaging.models import Instance
from ledger.chain.errors import LedgerUnavailable
from ledger.models import AuditEntry
from tests.ehr.conftest import integration_token, observation, patient
from tests.imaging.conftest import (
    CALLING_AE,
    CT,
    HOSPITAL,
    dicom_dataset,
    encoded,
    role_token,
    scp_serving,
    wait_idle,
)

OUT_OF_RESOURCES, SUCCESS = 0xA700, 0x0000
FHIR = "application/fhir+json"


# --- the classification, without a database ------------------------------------------------------

def _wrapped(error: Exception) -> OperationalError:
    """As Django raises it: its own OperationalError, from psycopg's."""
    try:
        raise error
    except Exception as cause:
        try:
            raise OperationalError(str(cause)) from cause
        except OperationalError as wrapped:
            return wrapped


@pytest.mark.parametrize(("error", "fault"), [
    (_wrapped(psycopg.errors.DeadlockDetected()), Fault.CONFLICT),
    (_wrapped(psycopg.errors.SerializationFailure()), Fault.CONFLICT),
    (_wrapped(psycopg.OperationalError("connection refused")), Fault.DATABASE),
    (_wrapped(psycopg.errors.QueryCanceled()), Fault.DATABASE),  # statement_timeout
    (_wrapped(psycopg.errors.LockNotAvailable()), Fault.DATABASE),  # lock_timeout
    (_wrapped(psycopg.errors.AdminShutdown()), Fault.DATABASE),
    (_wrapped(psycopg.errors.TooManyConnections()), Fault.DATABASE),
    (OperationalError("connection already closed"), Fault.DATABASE),
    (kombu.exceptions.OperationalError("broker down"), Fault.BROKER),
    (LedgerUnavailable("node down"), Fault.CHAIN),
    (_wrapped(psycopg.errors.UniqueViolation()), None),
    (_wrapped(psycopg.errors.ProgramLimitExceeded()), None),  # retrying would not help
    (ValueError("a bug"), None),
])
def test_transient_faults_are_told_from_bugs(error, fault):
    assert fault_of(error) is fault


# --- a cut-able proxy in front of the test database ----------------------------------------------

class CutProxy:
    """TCP proxy to PostgreSQL: ``cut()`` closes every connection and refuses (or holds) new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode = "open"  # open | refuse | blackhole
        self.accepted = 0  # connections forwarded upstream
        self.upstream_bytes = 0  # bytes sent by Django
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, mode: str = "refuse") -> None:
        with self._lock:
            self.mode = mode
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self.mode = "open"
            held, self._sockets = self._sockets, set()
        for sock in held:  # connections held while blackholed never get an answer
            _close(sock)

    def close(self) -> None:
        self.cut()
        _close(self.listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self.mode
                if mode == "blackhole":
                    self._sockets.add(client)
            if mode == "refuse":
                _close(client)
            elif mode == "open":
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            _close(client)
            return
        with self._lock:
            self.accepted += 1
            self._sockets.update((client, upstream))
        threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if counted:
                    self.upstream_bytes += len(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass


# --- fixtures -----------------------------------------------------------------------------------

@pytest.fixture
def tokens(transactional_db) -> dict[str, str]:
    return {"integration": integration_token("outage-integration", organization_id=HOSPITAL),
            "dpo": role_token("outage-dpo", Role.DPO)}


@pytest.fixture
def db_proxy(tokens):
    """Every new database connection of this process goes through the proxy until the test ends."""
    settings_dict = connections["default"].settings_dict
    original = settings_dict["HOST"], settings_dict["PORT"]
    proxy = CutProxy(original[0] or "127.0.0.1", int(original[1]))
    connections.close_all()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", str(proxy.port)
    yield proxy
    proxy.restore()
    connections.close_all()
    settings_dict["HOST"], settings_dict["PORT"] = original
    proxy.close()


@pytest.fixture
def web(db_proxy, settings, tmp_path) -> str:
    """The real WSGI handler on one thread (one persistent connection, as a gunicorn worker)."""
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tmp_path / "dicom", "allow_overwrite": True}}}
    imaging_services._ENDPOINTS_SEEN.clear()
    httpd = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=_Quiet)

    def serve() -> None:
        try:
            httpd.serve_forever(poll_interval=0.05)
        finally:
            connections.close_all()  # this thread's connection, before the test database goes

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(10)
    httpd.server_close()


def _auth(token: str, content_type: str = FHIR) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": content_type, "Accept": FHIR}


def _checked_outside() -> None:
    """The test thread's own connection may have died in the cut: a fresh one for the checks."""
    connections.close_all()


def _assert_fhir_transient(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.headers["Content-Type"].startswith(FHIR)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [item["code"] for item in outcome["issue"]] == ["transient"]


def _figures(name: str, capsys, **numbers) -> None:
    with capsys.disabled():
        print(f"\n[outage:{name}] " + " ".join(f"{key}={value}" for key, value in numbers.items()))


def _recover(send, deadline: float = 10.0) -> tuple[requests.Response, float]:
    """Send until an answer below 500; the answer and the seconds it took after the restore."""
    started = time.monotonic()
    while True:
        response = send()
        if response.status_code < 500 or time.monotonic() - started > deadline:
            return response, time.monotonic() - started
        time.sleep(0.05)


# --- FHIR ---------------------------------------------------------------------------------------

def test_fhir_during_a_cut_answers_503_transient_and_recovers_on_the_next_request(web, db_proxy, tokens,
                                                                                   capsys):
    auth = _auth(tokens["integration"])
    fhir = f"{web}/fhir"
    first = requests.post(f"{fhir}/Patient", data=json.dumps(patient(family="Before")), headers=auth, timeout=30)
    assert first.status_code == 201
    known = first.json()["id"]
    requests.get(f"{fhir}/Patient/{known}", headers=auth, timeout=30)
    assert db_proxy.accepted == 1  # one persistent connection serves the requests
    _checked_outside()
    audit_before = AuditEntry.objects.count()
    accepted_before_cut = db_proxy.accepted
    bundle = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111", "resource": patient(family="InBundle"),
         "request": {"method": "POST", "url": "Patient"}}]})
    calls = {
        "read": lambda: requests.get(f"{fhir}/Patient/{known}", headers=auth, timeout=30),
        "search": lambda: requests.get(f"{fhir}/Patient?family=Before", headers=auth, timeout=30),
        "create": lambda: requests.post(f"{fhir}/Patient", data=json.dumps(patient(family="During")),
                                        headers=auth, timeout=30),
        "update": lambda: requests.put(f"{fhir}/Patient/{known}",
                                       data=json.dumps(patient(family="During", id=known)), headers=auth,
                                       timeout=30),
        "transaction": lambda: requests.post(fhir, data=bundle, headers=auth, timeout=30),
    }

    db_proxy.cut()
    slowest, during = 0.0, []
    for name, call in calls.items():
        started = time.monotonic()
        response = call()
        slowest = max(slowest, time.monotonic() - started)
        during.append(response.status_code)
        _assert_fhir_transient(response)
    db_proxy.restore()
    recovered, seconds = _recover(calls["create"])
    after = {name: call().status_code for name, call in calls.items()}

    assert recovered.status_code == 201
    assert after == {"read": 200, "search": 200, "create": 201, "update": 200, "transaction": 200}
    assert db_proxy.accepted - accepted_before_cut == 1  # the broken connection dropped, one new opened
    _checked_outside()
    assert Resource.objects.filter(resource_type="Patient", text__contains="During").count() == 3  # 2 creates, 1 update
    assert not Resource.objects.filter(resource_type="Patient", text__contains="During",
                                       version_id__gt=2).exists()
    assert Resource.objects.get(logical_id=known).version_id == 2  # the refused update left nothing
    # 6 requests answered after the restore, 7 audit entries (the Bundle adds one for its patient);
    # the refused ones wrote none (the database was down) and none of theirs appeared later.
    assert AuditEntry.objects.count() - audit_before == 7
    _figures("fhir", capsys, sent=len(during) + 1 + len(after), refused_503=during.count(503),
             other_5xx=sum(s >= 500 for s in after.values()), slowest_503=f"{slowest:.2f}s",
             recover=f"{seconds:.2f}s", acknowledged_after=len(after) + 1)


def test_a_transaction_cut_mid_flight_is_all_or_nothing(web, db_proxy, tokens, capsys):
    auth = _auth(tokens["integration"])
    person = requests.post(f"{web}/fhir/Patient", data=json.dumps(patient(family="Big")), headers=auth,
                           timeout=30).json()["id"]
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation(f"Patient/{person}", value=n),
                "request": {"method": "POST", "url": "Observation"}} for n in range(3000)]
    body = json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    answer: dict = {}
    baseline = db_proxy.upstream_bytes

    sender = threading.Thread(target=lambda: answer.update(
        response=requests.post(f"{web}/fhir", data=body, headers=auth, timeout=120)))
    sender.start()
    deadline = time.monotonic() + 60
    while db_proxy.upstream_bytes - baseline < 200_000 and sender.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)  # the Bundle's rows are on their way to the database
    db_proxy.cut()
    sender.join(120)
    db_proxy.restore()

    response = answer["response"]
    _checked_outside()
    stored = Resource.objects.filter(resource_type="Observation", patient_id=person).count()
    _figures("fhir-mid-bundle", capsys, sent=1, status=response.status_code, stored=stored, of=len(entries))
    assert response.status_code in (200, 503)
    if response.status_code == 503:
        _assert_fhir_transient(response)
    # A commit the cut interrupted may have been applied; a part of a Bundle never is.
    assert stored in (0, len(entries))
    assert ResourceVersion.objects.filter(resource_type="Observation", patient_id=person).count() == stored
    if response.status_code == 200:
        assert stored == len(entries)


def test_a_database_that_does_not_answer_is_a_503_within_the_connect_timeout(web, db_proxy, tokens, capsys):
    auth = _auth(tokens["integration"])
    assert requests.get(f"{web}/fhir/Patient", headers=auth, timeout=30).status_code == 200

    db_proxy.cut("blackhole")
    started = time.monotonic()
    response = requests.get(f"{web}/fhir/Patient", headers=auth, timeout=30)
    seconds = time.monotonic() - started
    db_proxy.restore()
    recovered, recover = _recover(lambda: requests.get(f"{web}/fhir/Patient", headers=auth, timeout=30))

    _figures("fhir-blackhole", capsys, answer=response.status_code, seconds=f"{seconds:.2f}s",
             recover=f"{recover:.2f}s")
    _assert_fhir_transient(response)
    assert seconds < 8  # connect_timeout is 3 s: answered, not hung
    assert recovered.status_code == 200


def test_the_oauth_token_endpoint_outside_the_doors_is_a_503_too(web, db_proxy):
    requests.get(f"{web}/fhir/metadata", timeout=30)
    db_proxy.cut()
    response = requests.post(f"{web}/o/token/", data={"grant_type": "client_credentials"},
                             auth=("nobody", "secret"), timeout=30)
    db_proxy.restore()

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"error": {"code": "unavailable", "message": Fault.DATABASE.value}}


# --- DICOMweb and /api/ledger -------------------------------------------------------------------

def _stow_body(dataset) -> tuple[bytes, str]:
    boundary = "carrack-outage"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + encoded(dataset)
            + f"\r\n--{boundary}--\r\n".encode())
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_dicomweb_stow_qido_wado_answer_503_json_then_work(web, db_proxy, tokens, tmp_path, capsys):
    token = tokens["integration"]
    dataset = dicom_dataset(CT)
    body, content_type = _stow_body(dataset)
    stow_headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type,
                    "Accept": "application/dicom+json"}
    read_headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
    study = dataset.StudyInstanceUID
    calls = {
        "stow": lambda: requests.post(f"{web}/dicomweb/studies", data=body, headers=stow_headers, timeout=30),
        "qido": lambda: requests.get(f"{web}/dicomweb/studies?StudyInstanceUID={study}", headers=read_headers,
                                     timeout=30),
        "wado": lambda: requests.get(f"{web}/dicomweb/studies/{study}/metadata", headers=read_headers, timeout=30),
    }
    assert calls["qido"]().json() == []

    db_proxy.cut()
    during = {name: call() for name, call in calls.items()}
    db_proxy.restore()
    recovered, seconds = _recover(calls["stow"])
    after = {name: call().status_code for name, call in calls.items()}

    for name, response in during.items():
        assert response.status_code == 503, (name, response.text)
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {"errorMessage": Fault.DATABASE.value, "status": 503}
    assert recovered.status_code == 200
    assert after == {"stow": 200, "qido": 200, "wado": 200}
    _checked_outside()
    assert Instance.objects.count() == 1  # the refused STOW stored nothing, the retried one once
    assert len(list((tmp_path / "dicom").glob("**/*.dcm"))) == 1
    _figures("dicomweb", capsys, refused_503=len(during), other_5xx=sum(s >= 500 for s in after.values()),
             recover=f"{seconds:.2f}s", stored=1)


def test_api_ledger_answers_503_in_its_error_shape_then_works(web, db_proxy, tokens, capsys):
    auth = {"Authorization": f"Bearer {tokens['dpo']}"}
    requests.get(f"{web}/fhir/metadata", timeout=30)
    _checked_outside()
    entry = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first()
    url = f"{web}/api/ledger/audit-events/{entry}/proof"

    db_proxy.cut()
    during = requests.get(url, headers=auth, timeout=30)
    db_proxy.restore()
    after, seconds = _recover(lambda: requests.get(url, headers=auth, timeout=30))

    assert during.status_code == 503
    assert during.headers["Retry-After"] == "5"
    assert during.json() == {"error": {"code": "unavailable", "message": "the database is unavailable; "
                                                                         "the request was not applied, retry it later"}}
    assert after.status_code == 409  # served again: the entry is not anchored yet
    assert after.json()["error"]["code"] == "not_anchored"
    _figures("ledger", capsys, refused_503=1, recover=f"{seconds:.2f}s", after=after.status_code)


# --- DIMSE --------------------------------------------------------------------------------------

@pytest.fixture
def scp(db_proxy, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "dicom": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": tmp_path / "dicom", "allow_overwrite": True}}}
    imaging_services._ENDPOINTS_SEEN.clear()
    yield from scp_serving(settings, {CALLING_AE: HOSPITAL})


def _new_instance():
    dataset = dicom_dataset(CT)
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return dataset


@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
def test_c_store_answers_out_of_resources_promptly_and_the_association_recovers(scp, db_proxy, mode, capsys):
    datasets = [_new_instance() for _ in range(3)]
    ae = AE(ae_title=CALLING_AE)
    ae.add_requested_context(Verification)
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    ae.dimse_timeout = 30
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="CARRACK")
    assert assoc.is_established
    try:
        before = assoc.send_c_store(datasets[0]).Status
        db_proxy.cut(mode)
        started = time.monotonic()
        during = assoc.send_c_store(datasets[1]).Status
        seconds = time.monotonic() - started
        echo = assoc.send_c_echo().Status
        db_proxy.restore()
        after = assoc.send_c_store(datasets[2]).Status  # the same association, a new connection
        alive = assoc.is_established
    finally:
        assoc.release()
        wait_idle(scp)

    _figures(f"dimse-{mode}", capsys, sent=3, statuses=[hex(before), hex(during), hex(after)],
             seconds=f"{seconds:.2f}s", echo=hex(echo))
    assert (before, during, echo, after) == (SUCCESS, OUT_OF_RESOURCES, SUCCESS, SUCCESS)
    assert alive
    assert seconds < (1.0 if mode == "refuse" else 8.0)
    _checked_outside()
    stored = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    assert stored == {datasets[0].SOPInstanceUID, datasets[2].SOPInstanceUID}
