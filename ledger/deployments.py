"""The record of deployed contract addresses, one entry per chain id, in a JSON file.

Kept off the database on purpose: the addresses are needed before migrations run and
by the offline verifier, and the file travels with the node's state folder.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def read_deployments(path: Path, chain_id: int) -> dict[str, dict]:
    try:
        return json.loads(path.read_text()).get(str(chain_id), {})
    except FileNotFoundError:
        return {}


@contextmanager
def locked_deployments(path: Path, chain_id: int) -> Iterator[dict[str, dict]]:
    """Yield the chain's entries under an exclusive lock; write them back atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        everything = json.loads(path.read_text()) if path.exists() else {}
        entries = everything.setdefault(str(chain_id), {})
        yield entries
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
