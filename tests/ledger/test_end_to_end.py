"""The audit ledger end to end, through the FHIR API: real PostgreSQL, a real anvil, no mocks.

- Chain down: the API keeps answering while the node is stopped, nothing is lost, and after
  the restart every entry is anchored exactly once and provable with ``carrack-verify``.
- No personal data on chain: every transaction input and every log of the test chain is
  scanned for the test patients' names, identifiers, birth dates and ids.

Each test runs an anvil of its own (``anvil_node``: ``AnvilServer`` with a state file) with
``AuditAnchor`` deployed there and ``CHAIN_RPC_URL`` / ``CHAIN_DEPLOYMENTS_FILE`` pointing at it.
The FHIR requests go through the ``fhir`` fixture of ``tests/ehr/conftest.py`` (its auth).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from ledger.anchoring import anchor_tick
from ledger.models import AnchorBatch, AuditEntry, AuditSalt
from ledger.selectors import audit_proof, audit_range_leaves
from ledger.verify import audit_format, merkle
from tests.ehr.conftest import *  # noqa: F403  (the ``fhir`` fixture and whatever it needs)
from tests.ehr.conftest import observation, patient
from tests.ledger.conftest import configure_anchoring, deploy_anchor

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]

VERIFY = Path(sys.executable).parent / "carrack-verify"
ACCESSES = 500


@pytest.fixture(autouse=True)
def anchoring_settings(settings):
    configure_anchoring(settings, max_entries=200)
    return settings


@pytest.fixture
def node_chain(own_chain, deployments_file):
    """The test's own chain client and AuditAnchor's address there."""
    return own_chain, deploy_anchor(own_chain, deployments_file)


def rpc(url: str, method: str, *params):
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                      "params": list(params)}, timeout=10).json()
    assert "error" not in answer, answer
    return answer["result"]


def tick_until_done(client, limit: int = 50) -> list:
    """Tick until nothing is open and nothing new is due; the reports of every tick."""
    reports = []
    for _ in range(limit):
        report = anchor_tick(client=client)
        reports.append(report)
        assert report.conflict is None and report.unavailable is None and not report.busy, \
            (report, chain_state(client))
        open_batches = AnchorBatch.objects.exclude(status="confirmed").exists()
        if not open_batches and not report.created and not report.confirmed \
                and not AuditEntry.objects.filter(batch__isnull=True).exists():
            return reports
    pytest.fail(f"anchoring did not finish in {limit} ticks: {reports[-3:]}")


def chain_state(client) -> dict:
    """What the chain says when a tick fails: is the contract there, what did the batch do."""
    batch = AnchorBatch.objects.order_by("-first_seq").first()
    state = {"block": client.block_number()}
    if batch is not None:
        state.update(contract_code=client.has_code(batch.contract), batch=str(batch),
                     receipt=client.receipt(batch.tx_hash))
    return state


def assert_anchored_exactly_once(client, artifact, address: str) -> int:
    """DB batches and on-chain events tile 1..N contiguously, agree, and hold every entry once."""
    total = AuditEntry.objects.count()
    rows = list(AnchorBatch.objects.order_by("first_seq"))
    assert rows and all(b.status == "confirmed" for b in rows)
    ranges = [(b.first_seq, b.last_seq) for b in rows]
    assert ranges[0][0] == 1 and ranges[-1][1] == total
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:])), ranges
    events = client.events(artifact, address, "Anchored", member=client.address)
    assert [(e["args"]["firstSeq"], e["args"]["lastSeq"], e["args"]["root"], e["transaction"])
            for e in events] == [(b.first_seq, b.last_seq, bytes(b.root), b.tx_hash) for b in rows]
    covered = [s for e in events for s in range(e["args"]["firstSeq"], e["args"]["lastSeq"] + 1)]
    assert covered == list(range(1, total + 1))  # no overlap, no gap
    assert client.call(artifact, address, "lastAnchored", client.address) == total
    known = [(b.first_seq, b.last_seq, bytes(b.root)) for b in rows]
    assert client.call(artifact, address, "historyOf", client.address) == [
        total, len(rows), audit_format.history_accumulator(address, client.address, known)]
    for b in rows:
        assert bytes(b.root) == merkle.root(audit_range_leaves(first_seq=b.first_seq,
                                                               last_seq=b.last_seq))
    assert AuditEntry.objects.filter(batch__isnull=True).count() == 0
    assert sorted(AuditEntry.objects.values_list("seq", flat=True)) == list(range(1, total + 1))
    return total


def verify_with_cli(proof: dict, rpc_url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / f"proof-{proof['entry']['id']}.json"
    path.write_text(json.dumps(proof))
    return subprocess.run([str(VERIFY), "audit-proof", str(path), "--rpc", rpc_url],
                          capture_output=True, text=True, timeout=60)


# --- chain down ----------------------------------------------------------------------------

def test_chain_down_500_api_accesses_are_all_anchored_once_and_provable(
        fhir, anvil_node, node_chain, audit_anchor_artifact, tmp_path):
    client, address = node_chain
    ids = [fhir.create(patient(family=f"Downfam{n}", given="Ada", birth=f"19{50 + n}-01-0{n + 1}"))["id"]
           for n in range(4)]
    anvil_node.stop()

    statuses, rng = [], random.Random(4)
    for n in range(ACCESSES):
        pid = ids[n % len(ids)]
        kind = n % 5
        if kind == 0:
            response = fhir.post("/fhir/Observation", observation(f"Patient/{pid}", value=60 + n % 40))
        elif kind in (1, 2):
            response = fhir.get(f"/fhir/Patient/{pid}")
        elif kind == 3:
            response = fhir.get(f"/fhir/Observation?patient=Patient/{pid}")
        else:
            response = fhir.get(f"/fhir/Patient?family=Downfam{rng.randrange(4)}")
        statuses.append(response.status_code)
    assert all(200 <= s < 300 for s in statuses), sorted(set(statuses))

    total = AuditEntry.objects.count()
    assert total >= ACCESSES + len(ids)
    down = [anchor_tick(client=client) for _ in range(2)]
    assert all(r.unavailable and r.created == [] and r.confirmed == [] and r.sent == []
               for r in down), down
    assert AuditEntry.objects.count() == total
    assert AuditEntry.objects.filter(seq__isnull=False).count() == total
    assert AuditSalt.objects.count() == total
    assert AnchorBatch.objects.count() == 0

    anvil_node.start()
    tick_until_done(client)

    assert assert_anchored_exactly_once(client, audit_anchor_artifact, address) == total
    assert AuditEntry.objects.count() == total  # anchoring wrote no audit entries of its own
    entries = list(AuditEntry.objects.select_related("batch").order_by("seq"))
    sample = [entries[0], entries[-1], *random.Random(500).sample(entries[1:-1], 20)]
    for entry in sample:
        proof = audit_proof(entry=entry, include_salt=True)
        assert proof["entry"]["seq"] == entry.seq and "salt" in proof
        done = verify_with_cli(proof, anvil_node.url, tmp_path)
        assert done.returncode == 0, (entry.seq, done.stdout, done.stderr)
        assert done.stdout.startswith(f"valid: event and leaf of entry seq {entry.seq} ")
    tampered = audit_proof(entry=entries[-1], include_salt=True)
    tampered["salt"] = "00" * 32
    assert verify_with_cli(tampered, anvil_node.url, tmp_path).returncode == 1


# --- no personal data on chain -----------------------------------------------------------------

PEOPLE = [
    {"family": "Qwertzuiopfam", "given": "Xanthippeva", "birth": "1937-11-23",
     "identifier": "MRN-ZQ-77310452"},
    {"family": "Brzęczyszczykiewicz", "given": "Grzegorzówna", "birth": "1944-02-29",
     "identifier": "SSN-998-41-0372"},
    {"family": "Oyelaran-Kiptoo", "given": "Ñandúbay", "birth": "2001-06-17",
     "identifier": "NHS-4857773456"},
]


def encodings(text: str) -> dict[str, bytes]:
    """The byte forms a string could take inside transaction input or log data."""
    utf8 = text.encode()
    return {
        "utf-8": utf8,
        "utf-16-le": text.encode("utf-16-le"),
        "utf-16-be": text.encode("utf-16-be"),
        "ascii-hex of utf-8": utf8.hex().encode(),
        "ascii-hex of utf-8 (upper)": utf8.hex().upper().encode(),
        "ascii-hex of utf-16-le": text.encode("utf-16-le").hex().encode(),
    }


def chain_blobs(url: str) -> list[tuple[str, bytes]]:
    """Every transaction input and every log's topics and data on the chain, as bytes."""
    blobs = []
    for number in range(int(rpc(url, "eth_blockNumber"), 16) + 1):
        block = rpc(url, "eth_getBlockByNumber", hex(number), True)
        blobs.append((f"block {number} extraData", bytes.fromhex(block["extraData"][2:])))
        for tx in block["transactions"]:
            blobs.append((f"tx {tx['hash']} input", bytes.fromhex(tx["input"][2:])))
            receipt = rpc(url, "eth_getTransactionReceipt", tx["hash"])
            for i, log in enumerate(receipt["logs"]):
                blobs.append((f"tx {tx['hash']} log {i} data", bytes.fromhex(log["data"][2:])))
                for t, topic in enumerate(log["topics"]):
                    blobs.append((f"tx {tx['hash']} log {i} topic {t}", bytes.fromhex(topic[2:])))
    logs = rpc(url, "eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest"})
    for log in logs:
        blobs.append((f"eth_getLogs {log['transactionHash']} data", bytes.fromhex(log["data"][2:])))
        blobs.extend((f"eth_getLogs {log['transactionHash']} topic", bytes.fromhex(t[2:]))
                     for t in log["topics"])
    return blobs


def find_personal_data(blobs: list[tuple[str, bytes]], needles: list[str]) -> list[str]:
    found = []
    for where, blob in blobs:
        as_hex = blob.hex()
        for needle in needles:
            for form, pattern in encodings(needle).items():
                if pattern in blob:
                    found.append(f"{needle!r} as {form} in {where}")
            if needle.encode().hex() in as_hex:  # also at a nibble offset
                found.append(f"{needle!r} as hex digits in {where}")
    return found


def test_no_personal_data_on_chain_and_the_salt_is_needed_to_link(
        fhir, anvil_node, node_chain, audit_anchor_artifact):
    client, address = node_chain
    needles: list[str] = []
    for person in PEOPLE:
        created = fhir.create(patient(
            family=person["family"], given=person["given"], birth=person["birth"],
            identifier=[{"system": "urn:oid:2.16.840.1.113883.4.1", "value": person["identifier"]}]))
        pid = created["id"]
        obs = fhir.create(observation(f"Patient/{pid}"))
        for path in (f"/fhir/Patient/{pid}", f"/fhir/Patient?family={person['family']}",
                     f"/fhir/Patient?identifier={person['identifier']}",
                     f"/fhir/Patient?birthdate={person['birth']}",
                     f"/fhir/Observation?patient=Patient/{pid}", f"/fhir/Observation/{obs['id']}"):
            assert fhir.get(path).status_code == 200, path
        needles += [person["family"], person["given"], person["birth"], person["identifier"],
                    person["birth"].replace("-", ""), f"Patient/{pid}", f"Observation/{obs['id']}"]
        # the bare ids too, unless too short to be told apart from chance matches
        needles += [i for i in (pid, obs["id"]) if len(i) >= 8]
    # The entries do name them (off chain), so a leak of entry content would be found.
    events = "".join(AuditEntry.objects.values_list("event", flat=True))
    assert all(n in events for n in needles if n.startswith("Patient/"))

    tick_until_done(client)
    total = assert_anchored_exactly_once(client, audit_anchor_artifact, address)
    assert total >= len(PEOPLE) * 8

    # sanity: the scan finds what it looks for
    assert find_personal_data([("probe", "x Qwertzuiopfam y".encode("utf-16-le"))], needles)
    assert find_personal_data([("probe", b"\x00" + PEOPLE[1]["identifier"].encode().hex().encode())],
                              needles)
    assert find_personal_data([("probe", bytes.fromhex("0" + PEOPLE[2]["family"].encode().hex() + "0"))],
                              needles)
    blobs = chain_blobs(anvil_node.url)
    assert any("input" in where for where, _ in blobs) and any("log" in where for where, _ in blobs)
    assert find_personal_data(blobs, needles) == []

    # The on-chain root is the Merkle root of the salted leaves, and of nothing computable
    # from the events alone.
    for batch in AnchorBatch.objects.order_by("first_seq"):
        rows = list(AuditEntry.objects.filter(batch=batch).order_by("seq")
                    .values_list("seq", "event", "auditsalt__salt"))
        salted = [audit_format.leaf_hash(bytes(salt), seq, event.encode()) for seq, event, salt in rows]
        unsalted = [merkle.leaf_hash(audit_format.seq_bytes(seq) + event.encode()) for seq, event, _ in rows]
        bare = [merkle.leaf_hash(event.encode()) for _, event, _ in rows]
        [event] = client.events(audit_anchor_artifact, address, "Anchored", member=client.address,
                                firstSeq=batch.first_seq)
        chain_last, chain_root = event["args"]["lastSeq"], event["args"]["root"]
        assert chain_last == batch.last_seq and event["transaction"] == batch.tx_hash
        assert chain_root == bytes(batch.root) == merkle.root(salted)
        assert chain_root not in (merkle.root(unsalted), merkle.root(bare))
        assert not set(unsalted) & set(salted)
