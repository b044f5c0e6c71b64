"""Against a live server: concurrency, and real FHIR clients (fhirpy sync and async, fhirclient)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from ehr.models import Resource
from tests.ehr.conftest import integration_token, observation, patient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def token(transactional_db) -> str:
    return integration_token("live-integration")


@pytest.fixture
def base(live_server) -> str:
    return f"{live_server.url}/fhir"


def headers(token: str, **extra) -> dict:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
            "Accept": "application/fhir+json", **extra}


def test_twenty_parallel_conditional_creates_make_exactly_one(base, token):
    body = json.dumps(patient(identifier=[{"system": "urn:mrn", "value": "race"}]))

    def create(_):
        return requests.post(f"{base}/Patient", data=body, timeout=30,
                             headers=headers(token, **{"If-None-Exist": "identifier=urn:mrn|race"}))

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = sorted(r.status_code for r in pool.map(create, range(20)))

    assert statuses == [200] * 19 + [201]
    assert Resource.objects.filter(resource_type="Patient").count() == 1


def test_fhirpy_sync_client_creates_reads_and_searches(base, token):
    from fhirpy import SyncFHIRClient

    client = SyncFHIRClient(base, authorization=f"Bearer {token}")
    created = client.resource("Patient", **patient(family="Fhirpy"))
    created.save()

    fetched = client.reference("Patient", created.id).to_resource()
    found = client.resources("Patient").search(family="fhirpy").fetch_all()

    assert fetched["name"][0]["family"] == "Fhirpy"
    assert [p.id for p in found] == [created.id]


async def test_fhirpy_async_client_updates_and_deletes(base, token):
    from fhirpy import AsyncFHIRClient

    client = AsyncFHIRClient(base, authorization=f"Bearer {token}")
    created = client.resource("Patient", **patient(family="Async"))
    await created.save()
    created["gender"] = "other"
    await created.save()

    fetched = await client.reference("Patient", created.id).to_resource()
    assert fetched["meta"]["versionId"] == "2"
    await created.delete()
    assert await client.resources("Patient").search(_id=created.id).count() == 0


def test_fhirclient_reads_and_searches(base, token):
    from fhirclient import client as smart_client
    from fhirclient.models.observation import Observation
    from fhirclient.models.patient import Patient

    created = requests.post(f"{base}/Patient", data=json.dumps(patient(family="Smart")),
                            headers=headers(token), timeout=30).json()
    requests.post(f"{base}/Observation", data=json.dumps(observation(f"Patient/{created['id']}")),
                  headers=headers(token), timeout=30)
    smart = smart_client.FHIRClient(settings={"app_id": "carrack-tests", "api_base": base + "/"})
    smart.server.session.headers["Authorization"] = f"Bearer {token}"

    read = Patient.read(created["id"], smart.server)
    observations = list(Observation.where(struct={"subject": f"Patient/{created['id']}"}).perform_resources_iter(
        smart.server))

    assert read.name[0].family == "Smart"
    assert [o.subject.reference for o in observations] == [f"Patient/{created['id']}"]
