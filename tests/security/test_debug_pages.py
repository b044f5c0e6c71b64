"""Red-team issue 11, finding 1: no door answers with a debug page or a traceback.

The doors the red team used on ``make run`` are replayed under the test settings and under
``config.settings.local`` itself (what ``make run`` uses), with ``DJANGO_DEBUG=true`` in
the environment as well: errors are JSON (or an OperationOutcome under /fhir and /dicomweb),
naming no route, setting or value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import Client
from django.urls import path

import config.urls
from config.stack.services import BASE_DIR

pytestmark = pytest.mark.django_db
LEAKS = ("Traceback", "urlpatterns", "SECRET_KEY", "DEBUG", "<html", "<!DOCTYPE", "oauth2_provider")


def boom(request):
    raise RuntimeError("secret value 1961-02-03 of a patient")


# A URLconf with one view that fails, under the project's own handlers.
urlpatterns = [path("boom", boom), path("fhir/boom", boom), *config.urls.urlpatterns]
handler400, handler403 = config.urls.handler400, config.urls.handler403
handler404, handler500 = config.urls.handler404, config.urls.handler500


def assert_no_leak(response) -> None:
    text = response.content.decode()
    assert not any(leak in text for leak in LEAKS), text[:300]


@pytest.mark.parametrize("path", ["/o/.well-known/openid-configuration", "/o/userinfo/", "/nope",
                                  "/api/nope", "/admin-secret/", "/o/applications/"])
def test_unknown_paths_are_json_404(client, path):
    answer = client.get(path)

    assert answer.status_code == 404 and answer["Content-Type"] == "application/json"
    assert answer.json()["error"]["code"] == "not_found"
    assert_no_leak(answer)


def test_fhir_and_dicomweb_404_are_operation_outcomes(client):
    for url in ("/fhir/Nope/1/x/y/z", "/dicomweb/nope"):
        answer = client.get(url)
        assert answer.status_code in (401, 404)
        assert_no_leak(answer)


def test_a_failing_view_answers_a_fixed_json_500(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)

    answer = client.get("/boom")

    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "server_error",
                                       "message": "Internal error; the request was not applied"}}
    assert "1961" not in answer.content.decode()
    assert_no_leak(answer)


def test_a_failing_view_under_fhir_answers_an_operation_outcome(settings):
    settings.ROOT_URLCONF = __name__
    client = Client(raise_request_exception=False)

    answer = client.get("/fhir/boom")

    assert answer.status_code == 500 and answer["Content-Type"].startswith("application/fhir+json")
    assert answer.json()["resourceType"] == "OperationOutcome"
    assert answer.json()["issue"][0]["code"] == "exception"
    assert_no_leak(answer)


def test_a_bad_host_is_a_json_400(client):
    answer = client.get("/healthz", HTTP_HOST="evil.example")

    assert answer.status_code == 400 and answer.json()["error"]["code"] == "bad_request"
    assert_no_leak(answer)


def test_ledger_proof_with_an_unknown_format_shows_no_traceback(hospital_a):
    answer = hospital_a.dpo.get("/api/ledger/audit-events/0/proof?format=AAA")

    assert answer.status_code < 500 or answer.json()["error"]
    assert_no_leak(answer)


# Run in a process of its own: the settings `make run` uses, DJANGO_DEBUG=true in the environment.
LOCAL_PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client
client = Client(raise_request_exception=False, HTTP_HOST="127.0.0.1")
out = {"debug": settings.DEBUG, "answers": {}}
for path in ("/o/.well-known/openid-configuration", "/o/userinfo/", "/nope", "/static/admin/css/base.css"):
    r = client.get(path)
    body = b"".join(r.streaming_content) if r.streaming else r.content
    out["answers"][path] = [r.status_code, r["Content-Type"], body[:4000].decode("utf-8", "replace")]
print(json.dumps(out))
"""


def test_make_run_settings_never_show_debug_pages():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG="true")

    result = subprocess.run([sys.executable, "-c", LOCAL_PROBE], cwd=BASE_DIR, env=env,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["debug"] is False
    for url in ("/o/.well-known/openid-configuration", "/o/userinfo/", "/nope"):
        status, content_type, body = out["answers"][url]
        assert (status, content_type) == (404, "application/json"), (url, body[:200])
        assert not any(leak in body for leak in LEAKS)
    status, content_type, _ = out["answers"]["/static/admin/css/base.css"]
    assert status == 200 and content_type.startswith("text/css")  # the admin keeps its styles
