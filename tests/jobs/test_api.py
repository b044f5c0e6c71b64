"""GET /api/jobs/{id} shows progress to the starter only; DELETE cancels; others get 404."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from ehr.models import Role
from jobs.models import Job, JobStatus
from jobs.runner import JobContext, _claim
from jobs.services import job_submit
from ledger.models import AuditEntry
from tests.imaging.conftest import HOSPITAL, OTHER, role_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def tokens():
    return {name: role_token(f"{name}-jobs", Role.CLINICIAN, organization=org)
            for name, org in (("starter", HOSPITAL), ("colleague", HOSPITAL), ("outsider", OTHER))}


@pytest.fixture
def running(tokens):
    """A job the starter submitted, running, 3 of 8 done."""
    starter = get_user_model().objects.get(username="starter-jobs")
    job = job_submit(kind="tests.count", params={"total": 8}, user=starter, send=False)
    JobContext(_claim(job_id=job.pk, worker="w1"), worker="w1").progress(3, 8, message="counting")
    return job


def call(method: str, path: str, token: str | None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return getattr(Client(), method)(path, **headers)


def test_the_starter_sees_the_progress(running, tokens):
    response = call("get", f"/api/jobs/{running.pk}", tokens["starter"])

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", "kind", "status", "done", "total", "progress", "message")} == {
        "id": running.pk, "kind": "tests.count", "status": "running", "done": 3, "total": 8,
        "progress": 0.375, "message": "counting"}
    assert body["started"] and body["heartbeat"] and body["finished"] is None and body["result"] is None
    assert "params" not in body


@pytest.mark.parametrize("who", ["colleague", "outsider"])
def test_anyone_else_gets_the_answer_of_a_job_that_does_not_exist(running, tokens, who):
    theirs = call("get", f"/api/jobs/{running.pk}", tokens[who])
    missing = call("get", f"/api/jobs/{running.pk + 1000}", tokens[who])

    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json() == {"error": {"code": "not_found", "message": "no such job"}}


@pytest.mark.parametrize("path", ["/api/jobs/abc", "/api/jobs/99999999999999999999999"])
def test_an_id_that_is_no_number_is_no_job(tokens, path):
    assert call("get", path, tokens["starter"]).status_code == 404


def test_without_a_token_the_answer_is_401(running):
    response = call("get", f"/api/jobs/{running.pk}", None)

    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


def test_every_request_is_audited_once(running, tokens):
    before = AuditEntry.objects.count()

    call("get", f"/api/jobs/{running.pk}", tokens["starter"])
    call("get", f"/api/jobs/{running.pk}", tokens["outsider"])

    assert AuditEntry.objects.count() == before + 2
    assert set(AuditEntry.objects.order_by("-pk").values_list("agent", "outcome")[:2]) == {
        ("starter-jobs", "0"), ("outsider-jobs", "4")}


def test_the_starter_cancels_a_running_job(running, tokens):
    response = call("delete", f"/api/jobs/{running.pk}", tokens["starter"])

    assert response.status_code == 200
    assert response.json()["cancel_requested"] is True and response.json()["status"] == "running"
    assert Job.objects.get(pk=running.pk).cancel_requested


def test_the_starter_cancels_a_queued_job(tokens):
    starter = get_user_model().objects.get(username="starter-jobs")
    job = job_submit(kind="tests.count", params={"total": 8}, user=starter, send=False)

    response = call("delete", f"/api/jobs/{job.pk}", tokens["starter"])

    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELLED


@pytest.mark.parametrize("who", ["colleague", "outsider"])
def test_nobody_else_may_cancel(running, tokens, who):
    response = call("delete", f"/api/jobs/{running.pk}", tokens[who])

    assert response.status_code == 404
    assert not Job.objects.get(pk=running.pk).cancel_requested


def test_the_job_endpoint_is_in_the_openapi_schema(tokens):
    admin = get_user_model().objects.create_superuser("admin-jobs", password="pw-for-tests")
    client = Client()
    client.force_login(admin)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()

    assert set(schema["paths"]["/api/jobs/{id}"]) == {"get", "delete"}
