"""Compiled contracts (ABI and bytecode) written by ``contracts/scripts/compile.js``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactMissing


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict]
    bytecode: str
    deployed_bytecode: str

    @property
    def fingerprint(self) -> str:
        """Identifies this build, so a changed contract is redeployed rather than reused."""
        return hashlib.sha256(self.bytecode.encode()).hexdigest()


def load_artifact(name: str, build_dir: Path) -> Artifact:
    path = build_dir / f"{name}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactMissing(f"{path} not found: compile the contracts (`make contracts`).") from None
    return Artifact(
        name=name,
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
    )
