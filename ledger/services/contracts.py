"""Deploying the contracts: each service takes its chain client, so tests pass a real one."""

from __future__ import annotations

import logging
from pathlib import Path

from ledger.chain import ChainClient, load_artifact
from ledger.deployments import locked_deployments

logger = logging.getLogger(__name__)


def contracts_deploy(*, client: ChainClient, names: list[str], build_dir: Path,
                     registry: Path, consent_member: str | None = None) -> dict[str, dict]:
    """Deploy each contract once per chain and reuse it afterwards.

    An entry is reused while its address still holds code and the build is unchanged;
    a reset chain or a changed contract gets a fresh deployment. The node's account
    becomes admin and, for ``AuditAnchor``, a consortium member; ``consent_member`` (the
    node's consent-token key) is made a member of ``ConsentRegistry``, also on a reused one.
    """
    chain_id = client.chain_id()
    with locked_deployments(registry, chain_id) as entries:
        for name in names:
            artifact = load_artifact(name, build_dir)
            entry = entries.get(name)
            if entry and entry["build"] == artifact.fingerprint and client.has_code(entry["address"]):
                if name == "ConsentRegistry" and consent_member:
                    _member_ensure(client, artifact, entry["address"], consent_member)
                continue
            deployed = client.deploy(artifact, client.address)
            if name == "AuditAnchor":
                role = client.call(artifact, deployed["address"], "MEMBER_ROLE")
                client.transact(artifact, deployed["address"], "grantRole", role, client.address)
            elif name == "ConsentRegistry" and consent_member:
                _member_ensure(client, artifact, deployed["address"], consent_member)
            entries[name] = {**deployed, "build": artifact.fingerprint}
            logger.info("deployed %s at %s on chain %s", name, deployed["address"], chain_id)
        return dict(entries)


def _member_ensure(client: ChainClient, artifact, address: str, member: str) -> None:
    role = client.call(artifact, address, "MEMBER_ROLE")
    if not client.call(artifact, address, "hasRole", role, member):
        client.transact(artifact, address, "grantRole", role, member)
