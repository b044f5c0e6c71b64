"""Reads of the ledger app."""

from __future__ import annotations

from pathlib import Path

from .deployments import read_deployments


def deployed_contracts(*, registry: Path, chain_id: int) -> dict[str, dict]:
    """Contract name → deployment entry (address, transaction, block) on this chain."""
    return read_deployments(registry, chain_id)
