"""Just enough JSON-RPC over HTTP for the verifier: urllib only, so it runs without web3 or Django."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .errors import ProofInvalid


class JsonRpc:
    """Calls one node; an unreachable node or a failed call is a ``ProofInvalid`` that says so."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url, self.timeout, self._id = url, timeout, 0

    def call(self, method: str, *params: Any) -> Any:
        self._id += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        request = urllib.request.Request(self.url, data=body.encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ProofInvalid(f"cannot check the chain: node {self.url} unreachable "
                               f"({type(error).__name__})") from None
        if "error" in answer:
            raise ProofInvalid(f"cannot check the chain: {method} failed: {answer['error'].get('message')}")
        return answer.get("result")
