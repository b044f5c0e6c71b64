"""Consent tokens: check latency with the mirror vs on chain, gas per grant and revoke, grants/s.

Starts its own anvil (``config.stack.services.AnvilServer``, no state file) on a free 127.0.0.1
port, deploys the contracts with ``ledger.services.contracts_deploy`` and works on a throwaway
PostgreSQL database whose consent and FHIR tables it TRUNCATEs first (name must contain "bench"):

    createdb -h 127.0.0.1 -U postgres carrack_consent_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/carrack_consent_bench \\
        DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python manage.py migrate
    .venv/bin/python bench/consent.py [--patients 1000] [--mirror 100000] [--checks 20000]

1. Grants end to end: ``--patients`` Patients of hospital A, then one Consent each (permit
   Organization/B, TREAT) written through ``ehr.services.resource_create`` (one transaction
   each, as the FHIR API does), while a second thread runs ``consent_sync`` (send, mine,
   listen) back to back: grants/s from the first Consent write until every token is active.
2. Gas: ``gasUsed`` of every grant and revoke transaction (half of the Consents are then
   made inactive: revoked in the EHR at once, on chain by the next syncs).
3. Check latency: ``consent_check`` (the mirror, padded with ``--mirror`` synthetic active
   tokens of other patients) for random patients, half with a live token, against the
   reference of asking the chain directly (``isActive(tokenId)`` by ``eth_call``).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import arguments, django_setup, free_port, percentile, table  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/carrack_consent_bench"
A, B = "bench-hosp-a", "bench-hosp-b"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def reset() -> None:
    from django.db import connection

    if "bench" not in connection.settings_dict["NAME"]:
        raise SystemExit(f"refusing to TRUNCATE {connection.settings_dict['NAME']!r}: use a database "
                         f"whose name contains 'bench'")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE ledger_consentchaintx, ledger_consenttoken, ledger_consentdeny, "
                       "ledger_chaincursor, ehr_resource RESTART IDENTITY CASCADE")


def consent(patient_id: str, status: str = "active") -> str:
    return json.dumps({
        "resourceType": "Consent", "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "policy": [{"uri": "https://carrack.example/policy/treatment-sharing"}],
        "provision": {"type": "permit", "actor": [{"role": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": {"reference": f"Organization/{B}"}}],
                      "purpose": [{"system": V3, "code": "TREAT"}]},
    })


def grants_part(patients: int) -> tuple[list[str], list[str], float]:
    from django.db import connection

    from ehr import services
    from ledger.chain import consent_client
    from ledger.consents.sync import consent_sync
    from ledger.models import ConsentToken

    ids = []
    for n in range(patients):
        body = json.dumps({"resourceType": "Patient", "name": [{"family": f"Bench{n}"}],
                           "managingOrganization": {"reference": f"Organization/{A}"}})
        ids.append(services.resource_create(resource_type="Patient", text=body, organization_id=A)
                   .resource.logical_id)
    done = threading.Event()

    def syncing() -> None:
        client = consent_client()
        while not done.is_set():
            consent_sync(client=client)
        connection.close()

    worker = threading.Thread(target=syncing)
    started = time.perf_counter()
    worker.start()
    try:
        consent_ids = [services.resource_create(resource_type="Consent", text=consent(p), organization_id=A)
                       .resource.logical_id for p in ids]
        written = time.perf_counter() - started
        while ConsentToken.objects.filter(status=ConsentToken.ACTIVE).count() < patients:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
    finally:
        done.set()
        worker.join()
    print(table(["what", "value"], [
        ["Consents written (service layer, one transaction each)", patients],
        ["writing them took (s)", round(written, 2)],
        ["until every token was active on chain and in the mirror (s)", round(seconds, 2)],
        ["grants per second end to end", round(patients / seconds, 1)],
        ["Consent writes per second (EHR side alone)", round(patients / written, 1)],
    ]))
    return ids, consent_ids, seconds


def gas_part(ids: list[str], consent_ids: list[str], url: str) -> None:
    from ehr import services
    from ledger.chain import consent_client
    from ledger.consents.sync import consent_sync
    from ledger.models import ConsentChainTx

    revoked = 0
    for patient_id, consent_id in list(zip(ids, consent_ids))[::2]:
        body = json.loads(consent(patient_id, status="inactive"))
        services.resource_update(resource_type="Consent", logical_id=consent_id,
                                 text=json.dumps({**body, "id": consent_id}))
        revoked += 1
    client = consent_client()
    while ConsentChainTx.objects.filter(action="revoke").exclude(status="mined").exists():
        consent_sync(client=client)
    rows = []
    for action, goal in (("grant", "≤ 50,000"), ("revoke", "≤ 31,000")):
        gas = [rpc_gas(url, h) for h in ConsentChainTx.objects.filter(action=action, status="mined")
               .values_list("tx_hash", flat=True)[:500]]
        rows.append([action, len(gas), min(gas), round(statistics.mean(gas)), max(gas), goal])
    print(table(["transaction", "measured", "min gas", "mean gas", "max gas", "goal"], rows))


def rpc_gas(url: str, tx_hash: str) -> int:
    import requests

    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getTransactionReceipt",
                                      "params": [tx_hash]}, timeout=30).json()
    return int(answer["result"]["gasUsed"], 16)


def pad_mirror(rows: int) -> None:
    """Synthetic active tokens of other patients, so the check runs against a large mirror."""
    import hashlib

    from ledger.models import ConsentToken

    batch = []
    for n in range(rows):
        digest = hashlib.sha256(n.to_bytes(8, "big")).digest()
        batch.append(ConsentToken(
            patient_id=f"pad-{n}", organization_id=A, consent_id=f"pad-{n}", consent_version=1,
            consent_hash=digest, grantee=f"Organization/{'hosp-' + str(n % 18)}", purpose="TREAT",
            pseudonym=digest, terms=digest, status=ConsentToken.ACTIVE, token_id="0x" + digest.hex(),
        ))
        if len(batch) == 5_000:
            ConsentToken.objects.bulk_create(batch)
            batch = []
    ConsentToken.objects.bulk_create(batch)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_consenttoken")


def check_part(ids: list[str], checks: int, chain_checks: int) -> None:
    from ledger.chain import consent_client
    from ledger.consents.check import consent_check
    from ledger.consents.sync import artifact
    from ledger.models import ConsentToken

    rng = random.Random(7)
    grantee = f"Organization/{B}"
    mirror = []
    allowed = 0
    for _ in range(checks):
        patient_id = rng.choice(ids)
        t0 = time.perf_counter()
        allowed += consent_check(patient_id=patient_id, grantee=grantee, purpose="TREAT") is not None
        mirror.append((time.perf_counter() - t0) * 1e3)
    tokens = list(ConsentToken.objects.filter(patient_id__in=ids).values_list("token_id", "contract"))
    client, build = consent_client(), artifact()
    chain = []
    for _ in range(chain_checks):
        token_id, contract = rng.choice(tokens)
        t0 = time.perf_counter()
        client.call(build, contract, "isActive", int(token_id, 16))
        chain.append((time.perf_counter() - t0) * 1e3)
    rows = [[name, len(samples), round(statistics.median(samples), 3), round(percentile(samples, 0.99), 3),
             round(statistics.median(samples) / statistics.median(chain), 3)]
            for name, samples in (("consent_check (mirror)", mirror),
                                  ("reference: isActive(tokenId) eth_call to anvil", chain))]
    print(table(["check", "calls", "p50 ms", "p99 ms", "ratio p50 vs chain"], rows))
    print(f"allowed {allowed} of {checks} (half of the patients' consents were revoked); "
          f"mirror rows: {ConsentToken.objects.count():,}")


def main() -> None:
    parser = arguments(__doc__.split("\n\n")[0])
    parser.set_defaults(database_url=DEFAULT_DATABASE_URL)
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--mirror", type=int, default=100_000)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--chain-checks", type=int, default=2_000)
    args = parser.parse_args()
    django_setup(args.database_url)
    from django.conf import settings

    from config.stack.services import AnvilServer
    from ledger.chain import chain_client, consent_client
    from ledger.services import contracts_deploy

    reset()
    with tempfile.TemporaryDirectory() as state:
        node = AnvilServer(name="anvil", state_dir=Path(state), port=free_port(), persist=False)
        node.start()
        try:
            settings.CHAIN_RPC_URL = node.url
            settings.CHAIN_DEPLOYMENTS_FILE = Path(state) / "deployments.json"
            contracts_deploy(client=chain_client(), names=settings.CHAIN_CONTRACTS,
                             build_dir=settings.CONTRACTS_BUILD_DIR, registry=settings.CHAIN_DEPLOYMENTS_FILE,
                             consent_member=consent_client().address)
            ids, consent_ids, _ = grants_part(args.patients)
            gas_part(ids, consent_ids, node.url)
            pad_mirror(args.mirror)
            check_part(ids, args.checks, args.chain_checks)
        finally:
            node.stop()


if __name__ == "__main__":
    main()
