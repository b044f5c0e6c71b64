"""The web3.py implementation of the chain port: the only module that imports web3.

Every failure is translated here: connectivity problems become ``LedgerUnavailable``
(retry later), reverts become ``ContractRejected`` (do not retry).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import requests
from eth_abi import decode as abi_decode
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from .artifacts import Artifact
from .errors import ContractRejected, LedgerUnavailable


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
