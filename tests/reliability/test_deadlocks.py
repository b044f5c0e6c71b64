"""Concurrent transaction Bundles on one patient: no deadlock 500s, a consistent end state.

Given 16 transaction Bundles sent at once against a live server, half updating
Patient/p1 and its Observations in one order and half in the reverse order, when they run,
then none answers 500 (a deadlock is avoided by the canonical lock order, or retried; past
the retries it is a 409/503 with Retry-After), and every resource has exactly one version
per successful update, numbered without gaps, with one audit entry set per request.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ehr.models import Resource, ResourceVersion
from ledger.models import AuditEntry
from tests.ehr.conftest import integration_token, observation, patient

pytestmark = pytest.mark.django_db(transaction=True)

PARALLEL = 16
OBSERVATIONS = [f"o{n}" for n in range(1, 5)]


@pytest.fixture
def token(transactional_db) -> str:
    return integration_token("deadlock-integration")


@pytest.fixture
def base(live_server) -> str:
    return f"{live_server.url}/fhir"


def headers(token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json"}


def _put(resource: dict) -> dict:
    url = f"{resource['resourceType']}/{resource['id']}"
    return {"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}}


def _bundle(order: list[dict]) -> str:
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": [_put(r) for r in order]})


def _resources(round_number: int, patient_id: str = "p1") -> list[dict]:
    """Patient p1 and its Observations, with values that differ per request."""
    person = patient(family=f"Round{round_number}", id=patient_id)
    return [person, *(observation(f"Patient/{patient_id}", value=round_number, id=f"{patient_id}-{oid}")
                      for oid in OBSERVATIONS)]


def _send_all(base: str, token: str, bodies: list[str]) -> list[tuple[int, dict, float]]:
    """Every body posted at once (a barrier releases them together): status, headers, seconds."""
    barrier = threading.Barrier(len(bodies))

    def send(body: str) -> tuple[int, dict, float]:
        barrier.wait()
        started = time.monotonic()
        response = requests.post(base, data=body, headers=headers(token), timeout=120)
        return response.status_code, dict(response.headers), time.monotonic() - started

    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(send, bodies))


def _seed(base: str, token: str, patient_id: str = "p1") -> None:
    response = requests.post(base, data=_bundle(_resources(0, patient_id)), headers=headers(token), timeout=60)
    assert response.status_code == 200, response.text


def _consistent(resource_type: str, logical_id: str, expected_versions: int) -> None:
    row = Resource.objects.get(resource_type=resource_type, logical_id=logical_id)
    versions = sorted(ResourceVersion.objects.filter(resource=row).values_list("version_id", flat=True))
    assert versions == list(range(1, expected_versions + 1)), (resource_type, logical_id, versions)
    assert row.version_id == expected_versions
    latest = ResourceVersion.objects.get(resource=row, version_id=row.version_id)
    assert latest.text == row.text  # the current row is the newest version, not a lost update


def test_sixteen_opposite_order_bundles_never_answer_500(base, token, capsys):
    _seed(base, token)
    audit_before = AuditEntry.objects.count()
    bodies = []
    for number in range(1, PARALLEL + 1):
        resources = _resources(number)
        bodies.append(_bundle(resources if number % 2 else list(reversed(resources))))

    started = time.monotonic()
    results = _send_all(base, token, bodies)
    elapsed = time.monotonic() - started

    statuses = [status for status, _, _ in results]
    succeeded = statuses.count(200)
    with capsys.disabled():
        print(f"\n[deadlocks] sent={len(bodies)} ok={succeeded} statuses={sorted(statuses)} "
              f"5xx={sum(s >= 500 and s != 503 for s in statuses)} 503={statuses.count(503)} "
              f"slowest={max(t for _, _, t in results):.2f}s all={elapsed:.2f}s")
    assert 500 not in statuses
    assert set(statuses) <= {200, 409, 503}
    for status, answer_headers, _ in results:
        if status in (409, 503):
            assert int(answer_headers["Retry-After"]) >= 1
    assert succeeded >= PARALLEL // 2  # retries make nearly all go through; none lost to a deadlock
    _consistent("Patient", "p1", 1 + succeeded)
    for oid in OBSERVATIONS:
        _consistent("Observation", f"p1-{oid}", 1 + succeeded)
    # Each request left one audit set (its own entry plus one for the patient it wrote),
    # whatever number of attempts it took: a retried attempt's entries went with its rollback.
    failed = len(bodies) - succeeded
    assert AuditEntry.objects.count() - audit_before == 2 * succeeded + failed


def test_bundles_creating_the_same_new_ids_in_opposite_orders(base, token, capsys):
    """Update-as-create of ids nobody holds yet: the unique-key waits deadlock as row locks do."""
    bodies = []
    for number in range(1, PARALLEL + 1):
        resources = _resources(number, patient_id="p2")
        bodies.append(_bundle(resources if number % 2 else list(reversed(resources))))

    results = _send_all(base, token, bodies)

    statuses = [status for status, _, _ in results]
    with capsys.disabled():
        print(f"\n[deadlocks:create] sent={len(bodies)} statuses={sorted(statuses)}")
    assert 500 not in statuses
    assert set(statuses) <= {200, 409, 503}
    succeeded = statuses.count(200)
    assert succeeded >= PARALLEL // 2
    _consistent("Patient", "p2", succeeded)
    for oid in OBSERVATIONS:
        _consistent("Observation", f"p2-{oid}", succeeded)


def _mix_observation(number: int, oid: str) -> dict:
    return observation("Patient/p3", value=number, id=f"p3-{oid}",
                       identifier=[{"system": "urn:test:obs", "value": f"p3-{oid}"}])


def _conditional_mix(number: int) -> str:
    """Each Bundle updates one Observation through its identifier (its row is known only when
    the entry runs, so it is locked late) and the other by its id, half of them one way round,
    half the other: a deadlock that the up-front locks cannot prevent, only the rerun resolves."""
    by_criteria, by_id = ("o1", "o2") if number % 2 else ("o2", "o1")
    entries = [{"fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{number % 2}",
                "resource": _mix_observation(number, by_criteria),
                "request": {"method": "PUT", "url": f"Observation?identifier=urn:test:obs|p3-{by_criteria}"}},
               _put(_mix_observation(number, by_id))]
    return json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def _seed_mix(base: str, token: str) -> None:
    seed = [patient(family="Mix", id="p3"), _mix_observation(0, "o1"), _mix_observation(0, "o2")]
    response = requests.post(base, data=_bundle(seed), headers=headers(token), timeout=60)
    assert response.status_code == 200, response.text


def test_a_deadlock_left_by_late_locks_is_rerun_whole(base, token, caplog, capsys):
    _seed_mix(base, token)
    audit_before = AuditEntry.objects.count()

    with caplog.at_level("INFO", logger="ehr.api.http"):
        results = _send_all(base, token, [_conditional_mix(n) for n in range(1, PARALLEL + 1)])

    statuses = [status for status, _, _ in results]
    retried = sum("transaction retried after OperationalError" in r.getMessage() for r in caplog.records)
    with capsys.disabled():
        print(f"\n[deadlocks:late] sent={PARALLEL} statuses={sorted(statuses)} retries={retried}")
    assert 500 not in statuses and set(statuses) <= {200, 503}
    succeeded = statuses.count(200)
    assert succeeded >= PARALLEL - 2
    _consistent("Observation", "p3-o1", 1 + succeeded)
    _consistent("Observation", "p3-o2", 1 + succeeded)
    assert AuditEntry.objects.count() - audit_before == 2 * succeeded + (PARALLEL - succeeded)


def test_past_the_retries_a_deadlock_is_503_transient_with_retry_after(base, token, settings, capsys):
    settings.DB_TRANSACTION_RETRIES = 0
    _seed_mix(base, token)
    audit_before = AuditEntry.objects.count()

    outcomes = []
    for _ in range(3):  # deadlocks are a race: a few rounds make one all but certain
        for status, answer_headers, _ in _send_all(base, token, [_conditional_mix(n) for n in range(1, 17)]):
            outcomes.append((status, answer_headers.get("Retry-After")))

    statuses = [status for status, _ in outcomes]
    with capsys.disabled():
        print(f"\n[deadlocks:no-retry] sent={len(outcomes)} 200={statuses.count(200)} 503={statuses.count(503)}")
    assert 500 not in statuses
    assert statuses.count(503) >= 1
    assert all(retry_after == "5" for status, retry_after in outcomes if status == 503)
    # A refusal is audited too, in a transaction of its own (outcome 8), and only once.
    assert AuditEntry.objects.count() - audit_before == 2 * statuses.count(200) + statuses.count(503)
    assert AuditEntry.objects.filter(outcome="8").count() == statuses.count(503)
