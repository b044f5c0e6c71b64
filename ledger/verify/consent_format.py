"""The bytes of a consent token, computed the same way by the node and by the offline verifier.

No Django and no web3 here (``carrack-verify`` imports it). docs/consent.md has the format:

    pseudonym = HMAC-SHA256(node pseudonym key, "Patient/<id>")
    grantee   = SHA-256("Organization/<id>" or "ResearchStudy/<id>")
    purpose   = the v3 PurposeOfUse code in ASCII, right-padded with zeros to 32 bytes
    terms     = SHA-256(pseudonym || grantee || purpose || consentHash || serial as uint32 BE)
    tokenId   = keccak256(abi.encode(chainId, contract, issuer, terms, validFrom, validUntil))

``consentHash`` is the SHA-256 of the Consent version's stored JSON text; ``validFrom`` and
``validUntil`` are unix seconds (``validUntil`` exclusive, 0 = no end).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from eth_hash.auto import keccak

ACTIVE, REVOKED = 1, 2


def pseudonym(key: bytes, patient_id: str) -> bytes:
    return hmac.new(key, f"Patient/{patient_id}".encode(), hashlib.sha256).digest()


def grantee_hash(grantee: str) -> bytes:
    return hashlib.sha256(grantee.encode()).digest()


def purpose_bytes(code: str) -> bytes:
    raw = code.encode("ascii")
    if not raw or len(raw) > 32:
        raise ValueError("a purpose of use is 1 to 32 ASCII characters")
    return raw.ljust(32, b"\0")


def consent_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def terms(*, pseudonym: bytes, grantee: bytes, purpose: bytes, consent_hash: bytes, serial: int) -> bytes:
    return hashlib.sha256(pseudonym + grantee + purpose + consent_hash + serial.to_bytes(4, "big")).digest()


def unix(moment: datetime | None) -> int:
    """Seconds since the epoch; None (no end) is 0, as in the contract."""
    return 0 if moment is None else int(moment.timestamp())


def instant(seconds: int) -> datetime | None:
    return None if seconds == 0 else datetime.fromtimestamp(seconds, tz=UTC)


def token_id(*, chain_id: int, contract: str, issuer: str, terms: bytes, valid_from: int,
             valid_until: int) -> str:
    """The contract's ``tokenIdOf``, as 0x-prefixed 64 hex digits."""
    words = (
        chain_id.to_bytes(32, "big"),
        bytes.fromhex(contract.removeprefix("0x")).rjust(32, b"\0"),
        bytes.fromhex(issuer.removeprefix("0x")).rjust(32, b"\0"),
        terms,
        valid_from.to_bytes(32, "big"),
        valid_until.to_bytes(32, "big"),
    )
    return "0x" + keccak(b"".join(words)).hex()
