"""The chain port. Services receive a client from ``chain_client()``; tests pass their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from .artifacts import Artifact, load_artifact
from .errors import ArtifactMissing, ContractRejected, LedgerError, LedgerUnavailable

__all__ = [
    "Artifact",
    "ArtifactMissing",
    "ChainClient",
    "ContractRejected",
    "LedgerError",
    "LedgerUnavailable",
    "SignedTx",
    "chain_client",
    "consent_client",
    "load_artifact",
]


@dataclass(frozen=True)
class SignedTx:
    """A signed transaction: the bytes to persist and (re)send, and their hash."""

    raw: bytes
    tx_hash: str


class ChainClient(Protocol):
    address: str

    def chain_id(self) -> int: ...
    def block_number(self) -> int: ...
    def has_code(self, address: str) -> bool: ...
    def deploy(self, artifact: Artifact, *args: Any) -> dict: ...
    def transact(self, artifact: Artifact, address: str, function: str, *args: Any) -> dict: ...
    def call(self, artifact: Artifact, address: str, function: str, *args: Any) -> Any: ...
    def signed_call(self, artifact: Artifact, address: str, function: str, *args: Any,
                    nonce: int, max_fee_per_gas: int, max_priority_fee_per_gas: int,
                    gas: int | None = None) -> SignedTx: ...
    def send_raw(self, raw: bytes) -> str: ...
    def receipt(self, tx_hash: str) -> dict | None: ...
    def nonce(self, address: str, pending: bool) -> int: ...
    def fee_suggestion(self) -> tuple[int, int]: ...
    def base_fee(self) -> int: ...
    def events(self, artifact: Artifact, address: str, event: str, *, from_block: int = 0,
               to_block: int | None = None, **filters: Any) -> list[dict]: ...


def chain_client(*, rpc_url: str | None = None, timeout: float | None = None,
                 private_key: str | None = None) -> ChainClient:
    """The configured node and signing key (settings ``CHAIN_*``; consent tokens pass theirs)."""
    from django.conf import settings

    from .web3_client import Web3ChainClient

    return Web3ChainClient(
        rpc_url=rpc_url or settings.CHAIN_RPC_URL,
        private_key=private_key or settings.CHAIN_PRIVATE_KEY,
        timeout=timeout or settings.CHAIN_RPC_TIMEOUT,
    )


def consent_client(*, rpc_url: str | None = None) -> ChainClient:
    """The node's consent-token key (``CONSENT_PRIVATE_KEY``), apart from the anchoring key."""
    from django.conf import settings

    return chain_client(rpc_url=rpc_url, private_key=settings.CONSENT_PRIVATE_KEY)
