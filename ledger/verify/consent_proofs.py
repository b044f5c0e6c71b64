"""Consent token proofs: the document, and checking it against any node of the chain.

Pure (no Django, no web3): ``carrack-verify consent FILE --rpc URL [--block N]`` uses it
with the server switched off. The check recomputes the token id from the fields in the
proof (so the grantee and purpose it names are the ones the token commits to), finds the
grant transaction and its ``Granted`` event, and reads the token's state *at block N*.
Schema and formats: docs/consent.md.
"""

from __future__ import annotations

from typing import Any

from eth_hash.auto import keccak

from . import consent_format as fmt
from .errors import ProofInvalid
from .rpc import JsonRpc

KIND = "carrack-consent-proof"
VERSION = 1
GRANTED_TOPIC = "0x" + keccak(b"Granted(uint256,address)").hex()
TOKEN_STATE_SELECTOR = "0x" + keccak(b"tokenState(uint256)")[:4].hex()


def consent_proof_document(*, token: Any, on_chain: dict) -> dict:
    """The proof of one ``ConsentToken`` row; ``on_chain`` is its state read just now."""
    return {
        "kind": KIND,
        "version": VERSION,
        "token": {
            "id": token.token_id, "chain_id": token.chain_id, "contract": token.contract,
            "issuer": token.issuer, "valid_from": fmt.unix(token.valid_from),
            "valid_until": fmt.unix(token.valid_until), "serial": token.serial,
        },
        "terms": {
            "pseudonym": _hex(bytes(token.pseudonym)), "grantee": token.grantee,
            "grantee_hash": _hex(fmt.grantee_hash(token.grantee)), "purpose": token.purpose,
            "consent_hash": _hex(bytes(token.consent_hash)), "terms": _hex(bytes(token.terms)),
        },
        "consent": {"reference": f"Consent/{token.consent_id}/_history/{token.consent_version}",
                    "hash": _hex(bytes(token.consent_hash))},
        "grant": {"transaction": token.grant_tx_hash, "block_number": token.grant_block},
        "revoke": ({"transaction": token.revoke_tx_hash, "block_number": token.revoke_block}
                   if token.revoke_tx_hash else None),
        "status": token.status,
        "on_chain": on_chain,
    }


def verify_consent_proof(proof: dict, *, rpc_url: str, block: int | None = None, grantee: str | None = None,
                         purpose: str | None = None, timeout: float = 10.0) -> tuple[bool, str]:
    """(True, what was proven) or (False, why not)."""
    try:
        token, terms = _parts(proof)
        _check_commitment(token, terms)
        if grantee is not None and terms["grantee"] != grantee:
            raise ProofInvalid(f"the token is for {terms['grantee']}, not {grantee}")
        if purpose is not None and terms["purpose"] != purpose:
            raise ProofInvalid(f"the token is for purpose {terms['purpose']}, not {purpose}")
        at = _check_chain(proof, token, JsonRpc(rpc_url, timeout), block)
    except ProofInvalid as error:
        return False, str(error)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return False, f"the proof document is malformed ({type(error).__name__}: {error})"
    return True, (f"token {token['id']} was active at block {at} for {terms['grantee']}, purpose "
                  f"{terms['purpose']}, granted by {token['issuer']} on chain {token['chain_id']} "
                  f"(contract {token['contract']}) under {proof['consent']['reference']}")


def _parts(proof: dict) -> tuple[dict, dict]:
    if proof.get("kind") != KIND or proof.get("version") != VERSION:
        raise ProofInvalid(f"not a consent proof of version {VERSION}")
    return proof["token"], proof["terms"]


def _check_commitment(token: dict, terms: dict) -> None:
    """The grantee, purpose and consent hash named in the proof are those the token commits to."""
    grantee = fmt.grantee_hash(terms["grantee"])
    if _hex(grantee) != terms["grantee_hash"].lower():
        raise ProofInvalid("grantee_hash is not the hash of the named grantee")
    computed = fmt.terms(pseudonym=_unhex(terms["pseudonym"]), grantee=grantee,
                         purpose=fmt.purpose_bytes(terms["purpose"]),
                         consent_hash=_unhex(terms["consent_hash"]), serial=int(token["serial"]))
    if _hex(computed) != terms["terms"].lower():
        raise ProofInvalid("the terms do not hash to the stated commitment")
    expected = fmt.token_id(chain_id=int(token["chain_id"]), contract=token["contract"], issuer=token["issuer"],
                            terms=computed, valid_from=int(token["valid_from"]),
                            valid_until=int(token["valid_until"]))
    if expected != token["id"].lower():
        raise ProofInvalid("the token id does not commit to these terms, period, issuer, chain and contract")


def _check_chain(proof: dict, token: dict, rpc: JsonRpc, block: int | None) -> int:
    if int(rpc.call("eth_chainId"), 16) != int(token["chain_id"]):
        raise ProofInvalid(f"the node is not on chain {token['chain_id']}")
    at = int(rpc.call("eth_blockNumber"), 16) if block is None else block
    granted_in = _check_grant(proof["grant"], token, rpc)
    if at < granted_in:
        raise ProofInvalid(f"block {at} is before the grant (block {granted_in})")
    call = {"to": token["contract"], "data": TOKEN_STATE_SELECTOR + int(token["id"], 16).to_bytes(32, "big").hex()}
    words = _words(rpc.call("eth_call", call, hex(at)))
    issuer, valid_from, valid_until, status = "0x" + words[0][-20:].hex(), *(int.from_bytes(w, "big") for w in words[1:4])
    if status != fmt.ACTIVE:
        raise ProofInvalid(f"the token is {'revoked' if status == fmt.REVOKED else 'unknown'} at block {at}")
    if issuer != token["issuer"].lower() or valid_from != int(token["valid_from"]) or \
            valid_until != int(token["valid_until"]):
        raise ProofInvalid("the chain's issuer or period differ from the proof")
    moment = int(rpc.call("eth_getBlockByNumber", hex(at), False)["timestamp"], 16)
    if moment < valid_from or (valid_until and moment >= valid_until):
        raise ProofInvalid(f"block {at} (time {moment}) is outside the token's period")
    return at


def _check_grant(grant: dict, token: dict, rpc: JsonRpc) -> int:
    receipt = rpc.call("eth_getTransactionReceipt", grant["transaction"])
    if receipt is None or int(receipt["status"], 16) != 1:
        raise ProofInvalid(f"grant transaction {grant['transaction']} is not on the chain or reverted")
    issuer_topic = "0x" + token["issuer"].lower().removeprefix("0x").rjust(64, "0")
    for log in receipt["logs"]:
        topics = [topic.lower() for topic in log["topics"]]
        if (log["address"].lower() == token["contract"].lower() and topics[:1] == [GRANTED_TOPIC]
                and int(topics[1], 16) == int(token["id"], 16) and topics[2] == issuer_topic):
            return int(receipt["blockNumber"], 16)
    raise ProofInvalid("the grant transaction has no Granted event for this token from the contract")


def _words(data: str) -> list[bytes]:
    raw = bytes.fromhex(data.removeprefix("0x"))
    if len(raw) != 128:
        raise ProofInvalid("the contract's tokenState answer is malformed (wrong contract?)")
    return [raw[i:i + 32] for i in range(0, 128, 32)]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _unhex(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ProofInvalid("a hash field is not 32 bytes")
    return raw
