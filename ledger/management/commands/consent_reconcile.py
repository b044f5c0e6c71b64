"""``manage.py consent_reconcile``: compare the consent mirror with the chain; exit 1 on divergence."""

from django.core.management.base import BaseCommand, CommandError

from ledger.chain import LedgerError, consent_client
from ledger.consents.reconcile import consent_reconcile


class Command(BaseCommand):
    help = "Report every divergence between the consent-token mirror and ConsentRegistry on chain."

    def handle(self, *args, **options) -> None:
        try:
            divergences = consent_reconcile(client=consent_client())
        except LedgerError as error:
            raise CommandError(f"cannot reach the chain: {error}") from None
        for divergence in divergences:
            self.stdout.write(f"DIVERGENCE {divergence}")
        if divergences:
            raise CommandError(f"{len(divergences)} divergence(s) between mirror and chain")
        self.stdout.write("consent mirror and chain agree")
