"""Proof downloads from /api/ledger/ go through the audited endpoint: one audit entry each.

An anchored entry's proof (JSON or the compact bytes) and a consent token nobody has: each
request adds exactly one AuditEvent, naming who asked and, where it is known, what.
"""

from __future__ import annotations

import json

import pytest

from access.models import Role
from ledger.models import AuditEntry
from ledger.verify.proof_binary import MEDIA_TYPE
from tests.imaging.conftest import role_token
from tests.ledger.conftest import anchored_entries

pytestmark = [pytest.mark.django_db, pytest.mark.chain]


@pytest.fixture
def anchored(deployed, chain, audit_anchor_artifact):
    return anchored_entries(deployed=deployed, chain=chain, artifact=audit_anchor_artifact, count=3,
                            ranges=[(1, 3)])


@pytest.fixture
def dpo(client):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {role_token('dpo-downloads', Role.DPO)}"
    return client


def entries_after(pk: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(pk__gt=pk).order_by("pk"))


@pytest.mark.parametrize("accept", ["application/json", MEDIA_TYPE])
def test_an_audit_proof_download_writes_one_audit_entry(anchored, dpo, accept):
    last = AuditEntry.objects.order_by("-pk").first().pk
    entry = anchored[1]

    response = dpo.get(f"/api/ledger/audit-events/{entry.pk}/proof", HTTP_ACCEPT=accept)

    assert response.status_code == 200
    [audit] = entries_after(last)
    event = json.loads(audit.event)
    assert (audit.outcome, audit.agent, audit.patient_id) == ("0", "dpo-downloads", "p1")
    assert f"AuditEvent/{entry.pk}" in {e["what"]["reference"] for e in event["entity"] if "what" in e}


def test_a_consent_proof_download_of_an_unknown_token_writes_one_audit_entry(dpo):
    before = AuditEntry.objects.count()

    response = dpo.get(f"/api/ledger/consents/0x{'ab' * 32}/proof")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "no such consent token"}}
    assert AuditEntry.objects.count() == before + 1
    assert AuditEntry.objects.order_by("-pk").first().outcome == "4"
