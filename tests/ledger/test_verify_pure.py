"""``ledger.verify`` runs without Django: a fresh interpreter with no settings verifies real proofs.

The subprocess imports every verifier module, checks a proof the node built for an entry
anchored on the session's anvil (and one built by the verifier's own functions offline), and
reports which framework modules it loaded: none may be there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.models import AuditEntry
from ledger.selectors import audit_proof
from ledger.verify.errors import ProofInvalid
from ledger.verify.rpc import JsonRpc
from tests.ledger.conftest import RPC, anchored_entries

pytestmark = [pytest.mark.django_db, pytest.mark.chain]

MODULES = ["audit_check", "audit_format", "audit_proof", "cli", "consent_format", "consent_proofs",
           "errors", "merkle", "proof_binary", "rpc"]
FORBIDDEN = ["django", "rest_framework", "celery", "web3", "ledger.models", "ledger.services",
             "ledger.selectors"]

CHECK = """
import importlib, json, sys
for name in {modules!r}:
    importlib.import_module("ledger.verify." + name)
from ledger.verify import audit_check, audit_format, audit_proof, merkle
proof = json.load(open(sys.argv[1]))
ok, reason = audit_check.verify_proof(proof, rpc_url=sys.argv[2])
leaves = [audit_format.leaf_hash(bytes(32), seq, b"{{}}") for seq in (1, 2, 3)]
built = audit_proof.proof_document(entry_id=9, seq=2, event=None, salt=None, prev_hash=None, entry_hash=None,
                                   leaves=leaves, first_seq=1,
                                   anchor={{"first_seq": 1, "last_seq": 3, "member": "0x" + "11" * 20}})
offline_root = audit_check.verify_offline(built) == merkle.root(leaves)
loaded = sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in {forbidden!r}))
print(json.dumps({{"ok": ok, "reason": reason, "offline_root": offline_root, "loaded": loaded}}))
"""


def run_without_django(tmp_path: Path, proof: dict) -> dict:
    path = tmp_path / "proof.json"
    path.write_text(json.dumps(proof))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run([sys.executable, "-c", CHECK.format(modules=MODULES, forbidden=FORBIDDEN),
                           str(path), RPC], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_verifier_checks_an_anchored_proof_without_loading_django(deployed, chain, audit_anchor_artifact,
                                                                      tmp_path):
    [entry, *_] = anchored_entries(deployed=deployed, chain=chain, artifact=audit_anchor_artifact, count=3,
                                   ranges=[(1, 3)])
    proof = audit_proof(entry=AuditEntry.objects.select_related("batch").get(pk=entry.pk))

    answer = run_without_django(tmp_path, proof)

    assert answer["ok"] and answer["reason"].startswith("event and leaf of entry seq 1 ")
    assert answer["offline_root"] is True
    assert answer["loaded"] == []


def test_a_tampered_proof_is_refused_by_the_pure_verifier(deployed, chain, audit_anchor_artifact, tmp_path):
    [entry, *_] = anchored_entries(deployed=deployed, chain=chain, artifact=audit_anchor_artifact, count=2,
                                   ranges=[(1, 2)])
    proof = audit_proof(entry=AuditEntry.objects.select_related("batch").get(pk=entry.pk))
    proof["salt"] = "00" * 32

    answer = run_without_django(tmp_path, proof)

    assert (answer["ok"], answer["reason"]) == (False, "the leaf hash does not match the salted event")
    assert answer["loaded"] == []


def test_the_json_rpc_client_asks_a_real_node_and_names_an_unreachable_one():
    assert int(JsonRpc(RPC, 10).call("eth_chainId"), 16) > 0

    with pytest.raises(ProofInvalid, match=r"node http://127\.0\.0\.1:9 unreachable"):
        JsonRpc("http://127.0.0.1:9", 2).call("eth_chainId")
