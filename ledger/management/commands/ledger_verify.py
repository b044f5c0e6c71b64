"""``manage.py ledger_verify``: recompute the hash chain and every anchored root, check the chain."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ledger.integrity import LedgerDiffers, audit_verify
from ledger.models import AnchorBatch


class Command(BaseCommand):
    help = ("Recompute the audit hash chain from seq 1 and every confirmed batch's Merkle root, "
            "check each batch's Anchored event and each member's accumulator on chain; name the "
            "first entry that differs.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rpc", default=None, help="chain JSON-RPC URL (default: CHAIN_RPC_URL)")
        parser.add_argument("--offline", action="store_true", help="skip the on-chain checks")

    def handle(self, *args, **options) -> None:
        rpc_url = None if options["offline"] else (options["rpc"] or settings.CHAIN_RPC_URL)
        try:
            entries, batches = audit_verify(rpc_url=rpc_url)
        except LedgerDiffers as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"ok: {entries} entries, {batches} batches")
        for batch in AnchorBatch.objects.filter(reorgs__gt=0).exclude(status="confirmed").order_by("first_seq"):
            self.stdout.write(f"note: batch {batch.first_seq}..{batch.last_seq} was lost by the chain and "
                              f"is being re-anchored ({batch.status}): its entries are not anchored until "
                              "it is confirmed again (manage.py ledger_reanchor, or wait for the beat)")
