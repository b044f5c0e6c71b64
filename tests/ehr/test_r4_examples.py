"""Every official R4 example of the clinical types round-trips losslessly or is refused with a
4xx that says why; none answers 5xx.

An integration of hospital A writes them with PUT (update-as-create, the examples' own ids)
in passes: one refused because a resource it references is not there yet is tried again
once the others are in. What is stored is read back and compared with what was sent
(decimals as decimals, the server's meta.versionId and meta.lastUpdated aside).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from access.models import Role
from tests.access.test_policy import make_client

pytestmark = pytest.mark.django_db

EXAMPLES = Path(__file__).parent.parent / "fixtures" / "r4-examples" / "clinical.json.gz"
PASSES = 8


def _examples() -> dict[str, dict]:
    return json.loads(gzip.decompress(EXAMPLES.read_bytes()))


def _comparable(resource: dict) -> dict:
    value = json.loads(json.dumps(resource), parse_float=Decimal)
    meta = {k: v for k, v in value.pop("meta", {}).items() if k not in ("versionId", "lastUpdated")}
    return {**value, "meta": meta} if meta else value


def _why(response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    texts = [issue.get("diagnostics") or issue.get("details", {}).get("text") for issue in body["issue"]]
    assert all(texts), body
    return "; ".join(texts)


def test_official_r4_examples_round_trip_or_are_refused_with_a_reason(client):
    feed = make_client(client, "feed-a", Role.INTEGRATION, scope="system/*.cruds", organization_id="hosp-a")
    pending = sorted(_examples().items())
    stored, reasons, failed = {}, {}, {}
    for _ in range(PASSES):
        retry = []
        for name, resource in pending:
            response = feed.put(f"/fhir/{resource['resourceType']}/{resource['id']}", resource)
            if response.status_code in (200, 201):
                stored[name] = resource
            elif response.status_code >= 500:
                failed[name] = response.status_code
            else:
                reasons[name] = (response.status_code, _why(response))
                retry.append((name, resource))
        if len(retry) == len(pending):
            break
        pending = retry
    refused = {name: reasons[name] for name, _ in pending}

    lost = []
    for name, resource in stored.items():
        read = feed.get(f"/fhir/{resource['resourceType']}/{resource['id']}")
        assert read.status_code == 200, (name, read.content[:300])
        if _comparable(read.json()) != _comparable(resource):
            lost.append(name)
    why = Counter(f"{status} {text[:70]}" for status, text in refused.values())
    print(f"\n[r4-examples] {len(stored) + len(refused) + len(failed)} examples: {len(stored)} stored and "
          f"read back ({len(lost)} changed), {len(refused)} refused 4xx, {len(failed)} 5xx; "
          f"refusals: {dict(why.most_common(12))}")
    assert failed == {}
    assert lost == []
    # 345 of 429 today; the refused ones reference examples of types outside the fixture
    # (Patient/infant, Location/1, Device/…), refused by referential integrity.
    assert len(stored) >= 340
    assert all(status == 422 for status, _ in refused.values())
