"""R4 rest-hook Subscriptions against a real HTTP receiver on 127.0.0.1 (docs/subscriptions.md).

The work (matching the outbox, handshakes, deliveries) is run where the tests say so, by the
same function beat's sweep and the after-commit task run.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from config.celery import app
from ehr.subscriptions.models import SubscriptionChannel, SubscriptionDelivery, SubscriptionEvent
from ehr.subscriptions.receivers import ReceiverRefused, _check_address, receiver_check
from ehr.subscriptions.work import subscriptions_work
from ledger.models import AuditEntry

from .conftest import FhirClient, integration_token, observation, patient


class Receiver:
    """A hospital system's endpoint: records every POST; can go down and come back on its port."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.status = 200
        self.port = 0
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.received.append({"path": self.path, "headers": dict(self.headers), "body": body})
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def notifications(self) -> list[dict]:
        """What came after the handshake ping."""
        return self.received[1:]


@pytest.fixture
def receiver():
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


def subscription(endpoint: str, criteria: str = "Observation?code=8867-4", payload: str | None = None,
                 **channel) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "results for the HIS",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": endpoint, **({"payload": payload} if payload else {}),
                        **channel}}


def subscribe(fhir: FhirClient, receiver: Receiver, **kwargs) -> dict:
    """A Subscription made active by its handshake."""
    created = fhir.create(subscription(receiver.url, **kwargs))
    subscriptions_work()
    assert fhir.get(f"/fhir/Subscription/{created['id']}").json()["status"] == "active"
    return created


def test_a_created_subscription_is_activated_by_a_handshake_ping(fhir, receiver):
    created = fhir.create(subscription(receiver.url, header=["Authorization: Bearer his-secret"]))
    assert created["status"] == "requested"

    subscriptions_work()

    assert fhir.get(f"/fhir/Subscription/{created['id']}").json()["status"] == "active"
    ping = receiver.received[0]
    assert ping["path"] == "/hook" and ping["body"] == b""
    assert ping["headers"]["Authorization"] == "Bearer his-secret"


def test_a_failed_handshake_puts_the_subscription_in_error(fhir, receiver):
    receiver.status = 500
    created = fhir.create(subscription(receiver.url))

    subscriptions_work()

    stored = fhir.get(f"/fhir/Subscription/{created['id']}").json()
    assert stored["status"] == "error"
    assert "Handshake failed: HTTP 500" in stored["error"]


def test_create_then_update_notify_once_each_with_the_resource(fhir, receiver):
    subscribe(fhir, receiver, payload="application/fhir+json", header=["X-Feed: lab"])
    pat = fhir.create(patient())
    obs = fhir.create(observation(f"Patient/{pat['id']}"))
    subscriptions_work()
    obs["status"] = "amended"
    assert fhir.put(f"/fhir/Observation/{obs['id']}", obs).status_code == 200

    subscriptions_work()
    subscriptions_work()  # nothing twice

    sent = receiver.notifications()
    assert [json.loads(n["body"])["meta"]["versionId"] for n in sent] == ["1", "2"]
    assert {json.loads(n["body"])["id"] for n in sent} == {obs["id"]}
    assert all(n["headers"]["Content-Type"] == "application/fhir+json" and n["headers"]["X-Feed"] == "lab"
               for n in sent)


def test_an_empty_payload_is_a_ping_without_a_body(fhir, receiver):
    subscribe(fhir, receiver)
    pat = fhir.create(patient())
    fhir.create(observation(f"Patient/{pat['id']}"))

    subscriptions_work()

    (sent,) = receiver.notifications()
    assert sent["body"] == b"" and "Content-Type" not in sent["headers"]


def test_writes_the_criteria_do_not_match_are_not_notified(fhir, receiver):
    subscribe(fhir, receiver)
    pat = fhir.create(patient())
    fhir.create(observation(f"Patient/{pat['id']}", code="1234-5"))

    subscriptions_work()

    assert receiver.notifications() == []
    assert not SubscriptionEvent.objects.exists()


def test_a_receiver_down_for_a_while_gets_everything_in_order_when_back(fhir, receiver, settings):
    settings.SUBSCRIPTION_RETRY_BASE_SECONDS = 0
    subscribe(fhir, receiver, payload="application/fhir+json")
    pat = fhir.create(patient())
    receiver.stop()
    written = [fhir.create(observation(f"Patient/{pat['id']}", value=v))["id"] for v in (60, 61, 62)]
    subscriptions_work()
    subscriptions_work()
    assert SubscriptionDelivery.objects.filter(delivered__isnull=True).count() == 3
    assert SubscriptionDelivery.objects.get(sequence=1).attempts == 2
    assert SubscriptionDelivery.objects.get(sequence=2).attempts == 0  # held back behind the first

    receiver.start()
    subscriptions_work()

    assert [json.loads(n["body"])["id"] for n in receiver.notifications()] == written
    assert not SubscriptionDelivery.objects.filter(delivered__isnull=True).exists()


def test_repeated_failures_put_the_subscription_in_error(fhir, receiver, settings):
    settings.SUBSCRIPTION_RETRY_BASE_SECONDS = 0
    settings.SUBSCRIPTION_MAX_FAILURES = 2
    created = subscribe(fhir, receiver)
    receiver.status = 503
    pat = fhir.create(patient())
    fhir.create(observation(f"Patient/{pat['id']}"))

    subscriptions_work()
    subscriptions_work()

    stored = fhir.get(f"/fhir/Subscription/{created['id']}").json()
    assert stored["status"] == "error" and "HTTP 503" in stored["error"]
    assert SubscriptionChannel.objects.get(logical_id=created["id"]).status == "error"


def test_a_subscription_of_hospital_a_never_hears_of_hospital_b(client, fhir, receiver):
    subscribe(fhir, receiver)
    hospital_b = FhirClient(client, integration_token("hospital-b-his", "hospital-b"))
    pat = hospital_b.create(patient())
    hospital_b.create(observation(f"Patient/{pat['id']}"))

    subscriptions_work()

    assert receiver.notifications() == []


def test_hospital_b_cannot_read_or_change_a_subscription_of_hospital_a(client, fhir, receiver):
    created = subscribe(fhir, receiver)
    hospital_b = FhirClient(client, integration_token("hospital-b-his", "hospital-b"))

    assert hospital_b.get(f"/fhir/Subscription/{created['id']}").status_code == 404
    changed = {**created, "channel": {**created["channel"], "endpoint": "http://127.0.0.1:9/elsewhere"}}
    assert hospital_b.put(f"/fhir/Subscription/{created['id']}", changed).status_code == 403
    assert hospital_b.get("/fhir/Subscription").json().get("total") == 0
    assert SubscriptionChannel.objects.get(logical_id=created["id"]).endpoint == receiver.url


@pytest.mark.parametrize("endpoint", [
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "ftp://127.0.0.1/hook",
    "http://user:secret@127.0.0.1/hook",
])
def test_bad_endpoints_are_refused_at_create(fhir, endpoint):
    response = fhir.post("/fhir/Subscription", subscription(endpoint))

    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Subscription.channel.endpoint"]
    assert not SubscriptionChannel.objects.exists()


@pytest.mark.parametrize("changes, element", [
    ({"criteria": "NoSuchType?x=1"}, "Subscription.criteria"),
    ({"channel": {"type": "websocket", "endpoint": "ws://127.0.0.1/"}}, "Subscription.channel.type"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1/", "header": ["Host: evil"]}},
     "Subscription.channel.header"),
    ({"channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1/", "payload": "text/plain"}},
     "Subscription.channel.payload"),
])
def test_channels_the_server_cannot_serve_are_refused(fhir, changes, element):
    response = fhir.post("/fhir/Subscription", {**subscription("http://127.0.0.1/"), **changes})

    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == [element]


def test_production_rules_refuse_http_loopback_and_private_receivers(settings):
    settings.SUBSCRIPTION_ALLOW_HTTP = settings.SUBSCRIPTION_ALLOW_LOOPBACK = False
    settings.SUBSCRIPTION_ALLOW_PRIVATE = False
    import ipaddress

    with pytest.raises(ReceiverRefused, match="https"):
        receiver_check("http://127.0.0.1/hook")
    with pytest.raises(ReceiverRefused, match="loopback"):
        receiver_check("https://127.0.0.1/hook")
    for private in ("10.1.2.3", "192.168.0.10", "::ffff:10.0.0.1", "fd12::1"):
        with pytest.raises(ReceiverRefused, match="private"):
            _check_address(ipaddress.ip_address(private))


def test_each_delivery_is_audited_without_the_resource_in_logs(fhir, receiver, caplog, settings):
    settings.SUBSCRIPTION_RETRY_BASE_SECONDS = 0
    created = subscribe(fhir, receiver, payload="application/fhir+json")
    pat = fhir.create(patient(family="Zzyzx"))
    obs = fhir.create(observation(f"Patient/{pat['id']}"))
    receiver.status = 503
    subscriptions_work()
    receiver.status = 200

    subscriptions_work()

    entries = AuditEntry.objects.filter(agent=f"Subscription/{created['id']}").order_by("pk")
    assert [e.outcome for e in entries] == ["4", "0"]
    assert all(e.patient_id == pat["id"] for e in entries)
    assert f"Observation/{obs['id']}/_history/1" in entries[1].event
    assert pat["id"] not in caplog.text and obs["id"] not in caplog.text and "Zzyzx" not in caplog.text


def test_after_commit_the_write_itself_asks_for_the_work(fhir, receiver, django_capture_on_commit_callbacks):
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            fhir.create(subscription(receiver.url))
        pat = fhir.create(patient())
        with django_capture_on_commit_callbacks(execute=True):
            fhir.create(observation(f"Patient/{pat['id']}"))
    finally:
        app.conf.task_always_eager = False

    assert len(receiver.received) == 2  # the handshake, then the notification


def test_the_capability_statement_lists_subscription_with_its_rest_hook_channel(fhir):
    statement = fhir.get("/fhir/metadata").json()

    (entry,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Subscription"]
    assert entry["extension"][0]["valueCode"] == "rest-hook"


# --- consent: a patient of hospital A who consented to hospital B ---------------------------

@pytest.mark.chain
def test_a_consent_to_hospital_b_lets_b_s_subscription_hear_of_that_patient_only(db, client, deployed, receiver):
    from access.models import Role
    from ledger.chain import consent_client
    from ledger.consents.sync import consent_sync
    from tests.access.test_policy import make_client
    from tests.consent.test_consent_tokens import consent_body

    clinician_a = make_client(client, "sub-clin-a", Role.CLINICIAN, organization_id="sub-hosp-a")
    clinician_b = make_client(client, "sub-clin-b", Role.CLINICIAN, organization_id="sub-hosp-b")
    consenting = clinician_a.create(patient("Quill", managingOrganization={"reference": "Organization/sub-hosp-a"}))
    other = clinician_a.create(patient("Other", managingOrganization={"reference": "Organization/sub-hosp-a"}))
    me = make_client(client, "sub-pat", Role.PATIENT, scope="patient/*.rs patient/Consent.cud",
                     patient_id=consenting["id"])
    me.create(consent_body(consenting["id"], grantee="Organization/sub-hosp-b"))
    report = consent_sync(client=consent_client())
    assert report.unavailable is None and not report.failed
    subscribe(clinician_b, receiver, payload="application/fhir+json")

    seen = clinician_a.create(observation(f"Patient/{consenting['id']}"))
    clinician_a.create(observation(f"Patient/{other['id']}"))
    subscriptions_work()

    assert [json.loads(n["body"])["id"] for n in receiver.notifications()] == [seen["id"]]
    (entry,) = AuditEntry.objects.filter(agent__startswith="Subscription/")
    assert json.loads(entry.event)["agent"][0].get("policy")  # the consent token that allowed it


def test_roles_without_write_scope_on_subscription_cannot_create_one(db, client, receiver):
    from access.models import Role
    from tests.access.test_policy import make_client

    reader = make_client(client, "sub-reader", Role.CLINICIAN, scope="user/*.rs", organization_id="test-hospital")
    researcher = make_client(client, "sub-research", Role.RESEARCHER, organization_id="test-hospital")

    assert reader.post("/fhir/Subscription", subscription(receiver.url)).status_code == 403
    assert researcher.post("/fhir/Subscription", subscription(receiver.url)).status_code == 403
    assert not SubscriptionChannel.objects.exists()


def test_a_deleted_subscription_is_off(fhir, receiver):
    created = subscribe(fhir, receiver)
    assert fhir.delete(f"/fhir/Subscription/{created['id']}").status_code == 204
    pat = fhir.create(patient())
    fhir.create(observation(f"Patient/{pat['id']}"))

    subscriptions_work()

    assert SubscriptionChannel.objects.get(logical_id=created["id"]).status == "off"
    assert receiver.notifications() == []


@pytest.mark.parametrize("name", ["SUBSCRIPTION_ALLOW_HTTP", "SUBSCRIPTION_ALLOW_LOOPBACK"])
def test_production_refuses_http_and_loopback_receivers(name):
    from tests.test_settings import import_production

    result = import_production(**{name: "true"})

    assert result.returncode != 0
    assert "SUBSCRIPTION_ALLOW_HTTP and SUBSCRIPTION_ALLOW_LOOPBACK must be off in production" in result.stderr


def test_the_server_s_status_change_keeps_the_client_s_text_verbatim(fhir, receiver):
    text = json.dumps({**subscription(receiver.url), "reason": "r\u00e9sultats"})  # the client escapes the é
    created = fhir.post("/fhir/Subscription", text)
    assert created.status_code == 201

    subscriptions_work()

    stored = fhir.get(f"/fhir/Subscription/{created.json()['id']}").content.decode()
    assert 'r\\u00e9sultats' in stored and '"status":"active"' in stored


def test_a_write_while_the_broker_is_down_is_notified_by_the_sweep(fhir, receiver, django_capture_on_commit_callbacks):
    from config.stack.services import free_port
    from ehr.subscriptions.outbox import PUBLISHER

    subscribe(fhir, receiver)
    pat = fhir.create(patient())
    previous = app.conf.broker_url
    app.conf.broker_url, app._pool, app.amqp._producer_pool = f"redis://127.0.0.1:{free_port()}/0", None, None
    PUBLISHER.reset()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            fhir.create(observation(f"Patient/{pat['id']}"))  # the publish after commit fails, bounded
    finally:
        app.conf.broker_url, app._pool, app.amqp._producer_pool = previous, None, None
        PUBLISHER.reset()
    assert receiver.notifications() == [] and SubscriptionEvent.objects.count() == 1

    subscriptions_work()  # beat's sweep

    assert len(receiver.notifications()) == 1
