"""The web3.py implementation of the chain port: the only module that imports web3.

Every failure is translated here: connectivity problems become ``LedgerUnavailable``
(retry later), reverts become ``ContractRejected`` (do not retry).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    TimeExhausted,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)

from . import SignedTx
from .artifacts import Artifact
from .errors import ContractRejected, LedgerUnavailable

# Node answers to a re-broadcast of bytes it has already seen (geth, anvil, erigon,
# nethermind) or whose nonce is already used: the transaction is not lost, so no error.
_ALREADY_SENT = ("already known", "already imported", "known transaction", "nonce too low")
_GAS_MARGIN = 1.2  # estimate * margin: state may change between estimate and inclusion


class Web3ChainClient:
    """Talks JSON-RPC to one node and signs with the node's own key."""

    def __init__(self, *, rpc_url: str, private_key: str, timeout: float = 3.0,
                 receipt_timeout: float = 30.0) -> None:
        provider = Web3.HTTPProvider(
            rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
        )
        self._w3 = Web3(provider)
        self._account = Account.from_key(private_key)
        self._receipt_timeout = receipt_timeout

    @property
    def address(self) -> str:
        return self._account.address

    def chain_id(self) -> int:
        with _translated_errors():
            return self._w3.eth.chain_id

    def block_number(self) -> int:
        with _translated_errors():
            return self._w3.eth.block_number

    def has_code(self, address: str) -> bool:
        with _translated_errors():
            return len(self._w3.eth.get_code(Web3.to_checksum_address(address))) > 0

    def deploy(self, artifact: Artifact, *args: Any) -> dict:
        """Deploy and wait for the receipt; returns address, transaction hash and block."""
        factory = self._w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = self._send(factory.constructor(*args), artifact)
        return {
            "address": receipt["contractAddress"],
            "transaction": receipt["transactionHash"].to_0x_hex(),
            "block": receipt["blockNumber"],
        }

    def transact(self, artifact: Artifact, address: str, function: str, *args: Any) -> dict:
        contract = self._contract(artifact, address)
        receipt = self._send(contract.functions[function](*args), artifact)
        return {"transaction": receipt["transactionHash"].to_0x_hex(), "block": receipt["blockNumber"]}

    def call(self, artifact: Artifact, address: str, function: str, *args: Any) -> Any:
        contract = self._contract(artifact, address)
        with _translated_errors(artifact):
            return contract.functions[function](*args).call()

    def signed_call(self, artifact: Artifact, address: str, function: str, *args: Any,
                    nonce: int, max_fee_per_gas: int, max_priority_fee_per_gas: int,
                    gas: int | None = None) -> SignedTx:
        """Sign (not send) an EIP-1559 call, so the caller can persist the bytes before sending.

        Without ``gas`` the call is estimated now (a call that would revert raises
        ``ContractRejected``) and given a margin.
        """
        call = self._contract(artifact, address).functions[function](*args)
        with _translated_errors(artifact):
            if gas is None:
                gas = int(call.estimate_gas({"from": self._account.address}) * _GAS_MARGIN)
            transaction = call.build_transaction({
                "from": self._account.address, "nonce": nonce, "gas": gas, "type": 2,
                "chainId": self._w3.eth.chain_id, "maxFeePerGas": max_fee_per_gas,
                "maxPriorityFeePerGas": max_priority_fee_per_gas,
            })
        signed = self._account.sign_transaction(transaction)
        return SignedTx(raw=bytes(signed.raw_transaction), tx_hash=signed.hash.to_0x_hex())

    def send_raw(self, raw: bytes) -> str:
        """Broadcast signed bytes; sending the same bytes again is safe and returns the hash.

        "nonce too low" also returns the hash: the nonce was used by this transaction or
        by one that replaced it, and ``receipt`` tells which.
        """
        tx_hash = Web3.keccak(raw).to_0x_hex()
        with _translated_errors():
            try:
                self._w3.eth.send_raw_transaction(raw)
            except Web3RPCError as error:
                if not _already_sent(error):
                    raise
        return tx_hash

    def receipt(self, tx_hash: str) -> dict | None:
        """The mined transaction's outcome, or None while it is not in a block."""
        with _translated_errors():
            try:
                receipt = self._w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                return None
        return {
            "transaction": receipt["transactionHash"].to_0x_hex(),
            "status": receipt["status"],
            "block_number": receipt["blockNumber"],
            "block_hash": receipt["blockHash"].to_0x_hex(),
            "logs": len(receipt["logs"]),
        }

    def nonce(self, address: str, pending: bool) -> int:
        """Transactions sent by ``address``: mined only, or including the node's pool."""
        with _translated_errors():
            return self._w3.eth.get_transaction_count(
                Web3.to_checksum_address(address), "pending" if pending else "latest"
            )

    def fee_suggestion(self) -> tuple[int, int]:
        """(max fee, priority fee) per gas: twice the latest base fee plus the node's tip."""
        with _translated_errors():
            priority = self._w3.eth.max_priority_fee
            base = self._w3.eth.get_block("latest").get("baseFeePerGas", 0)
        return 2 * base + priority, priority

    def base_fee(self) -> int:
        """The latest block's base fee per gas: an offer below it is not mined."""
        with _translated_errors():
            return self._w3.eth.get_block("latest").get("baseFeePerGas", 0)

    def events(self, artifact: Artifact, address: str, event: str, *, from_block: int = 0,
               to_block: int | None = None, **filters: Any) -> list[dict]:
        """Mined logs of ``event`` (indexed arguments filtered), oldest first."""
        contract = self._contract(artifact, address)
        with _translated_errors(artifact):
            logs = contract.events[event]().get_logs(
                from_block=from_block, to_block="latest" if to_block is None else to_block,
                argument_filters=filters or None,
            )
        return [
            {
                "args": {k: bytes(v) if isinstance(v, bytes) else v for k, v in log["args"].items()},
                "transaction": log["transactionHash"].to_0x_hex(),
                "block_number": log["blockNumber"],
                "block_hash": log["blockHash"].to_0x_hex(),
            }
            for log in logs
        ]

    def _contract(self, artifact: Artifact, address: str):
        return self._w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact.abi)

    def _send(self, call, artifact: Artifact) -> dict:
        with _translated_errors(artifact):
            transaction = call.build_transaction({
                "from": self._account.address,
                "nonce": self._w3.eth.get_transaction_count(self._account.address, "pending"),
                "chainId": self._w3.eth.chain_id,
            })
            signed = self._account.sign_transaction(transaction)
            tx_hash = self._w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self._w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self._receipt_timeout)
        if receipt["status"] != 1:
            raise ContractRejected(f"transaction {tx_hash.to_0x_hex()} reverted")
        return receipt


@contextmanager
def _translated_errors(artifact: Artifact | None = None) -> Iterator[None]:
    try:
        yield
    except ContractLogicError as error:
        raise ContractRejected(_revert_reason(error, artifact)) from None
    except (requests.RequestException, TimeExhausted, ConnectionError, TimeoutError) as error:
        raise LedgerUnavailable(f"chain node unreachable: {type(error).__name__}") from None
    except Web3Exception as error:
        raise LedgerUnavailable(f"chain node error: {error}") from None


def _already_sent(error: Web3RPCError) -> bool:
    message = str(error).lower()
    return any(marker in message for marker in _ALREADY_SENT)


def _revert_reason(error: ContractLogicError, artifact: Artifact | None) -> str:
    """Name a custom error (``Gap(11, 12)``) from the ABI instead of showing raw revert data."""
    data = error.data if isinstance(error.data, str) else ""
    for item in artifact.abi if artifact else []:
        if item["type"] != "error":
            continue
        types = [arg["type"] for arg in item["inputs"]]
        selector = Web3.keccak(text=f"{item['name']}({','.join(types)})")[:4].to_0x_hex()
        if data.startswith(selector):
            values = abi_decode(types, bytes.fromhex(data[len(selector):]))
            return f"{item['name']}({', '.join(map(str, values))})"
    return error.message or str(error)
