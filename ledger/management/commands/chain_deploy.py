"""``manage.py chain_deploy``: deploy the contracts once and record their addresses (idempotent)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ledger.chain import LedgerError, chain_client, consent_client
from ledger.services import contracts_deploy


class Command(BaseCommand):
    help = "Deploy Carrack's contracts to CHAIN_RPC_URL unless already there; print the addresses."

    def handle(self, *args, **options) -> None:
        try:
            deployed = contracts_deploy(
                client=chain_client(),
                names=settings.CHAIN_CONTRACTS,
                build_dir=settings.CONTRACTS_BUILD_DIR,
                registry=settings.CHAIN_DEPLOYMENTS_FILE,
                consent_member=consent_client().address,
            )
        except LedgerError as error:
            raise CommandError(str(error)) from None
        summary = ", ".join(f"{name} {entry['address']}" for name, entry in sorted(deployed.items()))
        self.stdout.write(f"contracts: {summary}")
