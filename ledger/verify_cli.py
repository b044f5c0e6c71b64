"""``carrack-verify``: check Carrack proofs without the server, with only a chain RPC URL.

    carrack-verify audit-proof proof.json --rpc http://127.0.0.1:8545

Exit status 0 (prints ``valid: …``), 1 (prints ``invalid: <reason>``), 2 (usage error).
Imports neither Django nor web3.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .proofs import verify_proof


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="carrack-verify", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit-proof", help="check an audit-event proof document")
    audit.add_argument("file", help="the proof JSON (from GET /api/ledger/audit-events/{id}/proof)")
    audit.add_argument("--rpc", default=os.environ.get("CHAIN_RPC_URL"),
                       help="JSON-RPC URL of a node of the chain (default: $CHAIN_RPC_URL)")
    audit.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC call")
    args = parser.parse_args(argv)
    if not args.rpc:
        parser.error("--rpc URL is required (or set CHAIN_RPC_URL)")
    try:
        with open(args.file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        parser.error(f"cannot read {args.file}: {error.strerror}")
    ok, reason = _check(text, args.rpc, args.timeout)
    print(f"{'valid' if ok else 'invalid'}: {reason}")
    return 0 if ok else 1


def _check(text: str, rpc: str, timeout: float) -> tuple[bool, str]:
    try:
        proof = json.loads(text)
    except ValueError:
        return False, "the file is not JSON"
    if not isinstance(proof, dict):
        return False, "the file is not a proof document (a JSON object)"
    return verify_proof(proof, rpc_url=rpc, timeout=timeout)


if __name__ == "__main__":
    sys.exit(main())
