"""``carrack-verify``: check Carrack proofs without the server, with only a chain RPC URL.

    carrack-verify audit-proof proof.json --rpc http://127.0.0.1:8545
    carrack-verify consent consent-proof.json --rpc http://127.0.0.1:8545 [--block N]

Exit status 0 (prints ``valid: …``), 1 (prints ``invalid: <reason>``), 2 (usage error).
Imports neither Django nor web3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .audit_check import verify_proof
from .consent_proofs import verify_consent_proof
from .errors import ProofInvalid
from .proof_binary import MAGIC, proof_decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carrack-verify", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit-proof", help="check an audit-event proof document")
    audit.add_argument("file", help="the proof JSON (from GET /api/ledger/audit-events/{id}/proof)")
    consent = commands.add_parser("consent", help="check that a consent token was active at a block")
    consent.add_argument("file", help="the proof JSON (from GET /api/ledger/consents/{id}/proof)")
    consent.add_argument("--block", type=int, default=None, help="block number (default: the latest)")
    consent.add_argument("--grantee", help="also require this grantee (e.g. Organization/b)")
    consent.add_argument("--purpose", help="also require this purpose of use (e.g. TREAT)")
    for sub in (audit, consent):
        sub.add_argument("--rpc", default=os.environ.get("CHAIN_RPC_URL"),
                         help="JSON-RPC URL of a node of the chain (default: $CHAIN_RPC_URL)")
        sub.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC call")
    args = parser.parse_args(argv)
    if not args.rpc:
        parser.error("--rpc URL is required (or set CHAIN_RPC_URL)")
    try:
        with open(args.file, "rb") as handle:
            data = handle.read()
    except OSError as error:
        parser.error(f"cannot read {args.file}: {error.strerror}")
    ok, reason = _check(data, args)
    print(f"{'valid' if ok else 'invalid'}: {reason}")
    return 0 if ok else 1


def _check(data: bytes, args: argparse.Namespace) -> tuple[bool, str]:
    try:
        proof = proof_decode(data) if data.startswith(MAGIC) else json.loads(data.decode("utf-8"))
    except ProofInvalid as error:
        return False, str(error)
    except ValueError:
        return False, "the file is not JSON"
    if not isinstance(proof, dict):
        return False, "the file is not a proof document (a JSON object)"
    if args.command == "consent":
        return verify_consent_proof(proof, rpc_url=args.rpc, block=args.block, grantee=args.grantee,
                                    purpose=args.purpose, timeout=args.timeout)
    return verify_proof(proof, rpc_url=args.rpc, timeout=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
