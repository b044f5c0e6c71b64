"""``contracts_deploy`` deploys once per chain and reuses the recorded addresses."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError

from config.stack.services import free_port
from ledger.chain import consent_client, load_artifact
from ledger.services import contracts_deploy


def deploy(chain, registry):
    return contracts_deploy(client=chain, names=settings.CHAIN_CONTRACTS,
                            build_dir=settings.CONTRACTS_BUILD_DIR, registry=registry)


def test_first_deploy_records_address_and_makes_the_node_a_member(chain, deployments_file,
                                                                  audit_anchor_artifact):
    deployed = deploy(chain, deployments_file)

    entry = json.loads(deployments_file.read_text())["31337"]["AuditAnchor"]
    assert entry == deployed["AuditAnchor"]
    assert chain.has_code(entry["address"])
    role = chain.call(audit_anchor_artifact, entry["address"], "MEMBER_ROLE")
    assert chain.call(audit_anchor_artifact, entry["address"], "hasRole", role, chain.address)


def test_second_deploy_reuses_the_address_and_sends_nothing(chain, deployments_file):
    first = deploy(chain, deployments_file)
    block = chain.block_number()

    second = deploy(chain, deployments_file)

    assert second == first
    assert chain.block_number() == block


def test_a_changed_build_is_redeployed(chain, deployments_file):
    first = deploy(chain, deployments_file)
    stale = json.loads(deployments_file.read_text())
    stale["31337"]["AuditAnchor"]["build"] = "an older build"
    deployments_file.write_text(json.dumps(stale))

    second = deploy(chain, deployments_file)

    assert second["AuditAnchor"]["address"] != first["AuditAnchor"]["address"]


def test_an_address_without_code_is_redeployed(chain, deployments_file):
    first = deploy(chain, deployments_file)
    gone = json.loads(deployments_file.read_text())
    gone["31337"]["AuditAnchor"]["address"] = "0x000000000000000000000000000000000000dEaD"
    deployments_file.write_text(json.dumps(gone))

    second = deploy(chain, deployments_file)

    assert chain.has_code(second["AuditAnchor"]["address"])
    assert second["AuditAnchor"]["build"] == first["AuditAnchor"]["build"]


def test_command_prints_addresses(deployments_file, capsys):
    call_command("chain_deploy")

    entries = json.loads(deployments_file.read_text())["31337"]
    assert capsys.readouterr().out.strip() == (f"contracts: AuditAnchor {entries['AuditAnchor']['address']}, "
                                               f"ConsentRegistry {entries['ConsentRegistry']['address']}")


def test_consent_key_is_a_registry_member_also_on_a_reused_deployment(chain, deployments_file):
    call_command("chain_deploy")
    entry = json.loads(deployments_file.read_text())["31337"]["ConsentRegistry"]
    registry = load_artifact("ConsentRegistry", settings.CONTRACTS_BUILD_DIR)
    role = chain.call(registry, entry["address"], "MEMBER_ROLE")
    member = consent_client().address
    chain.transact(registry, entry["address"], "revokeRole", role, member)

    call_command("chain_deploy")

    assert json.loads(deployments_file.read_text())["31337"]["ConsentRegistry"] == entry
    assert chain.call(registry, entry["address"], "hasRole", role, member) is True


def test_command_fails_with_a_message_when_the_chain_is_down(deployments_file, settings):
    settings.CHAIN_RPC_URL = f"http://127.0.0.1:{free_port()}"

    with pytest.raises(CommandError, match="unreachable"):
        call_command("chain_deploy")
    assert not deployments_file.exists()
