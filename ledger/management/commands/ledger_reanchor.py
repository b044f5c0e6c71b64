"""``manage.py ledger_reanchor``: find the anchors the chain lost and put them back, now.

The beat does the same on every tick for the newest batches and the contract's last anchored
seq; this command looks up every confirmed batch's receipt and waits until what it re-opened
is confirmed again, for an operator who wants ``ledger_verify`` ok before walking away.
"""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from ledger.anchoring import anchor_tick
from ledger.chain import chain_client
from ledger.models import AnchorBatch

POLL_SECONDS = 1.0


class Command(BaseCommand):
    help = ("Re-check every confirmed audit anchor against the chain, re-anchor the batches it no "
            "longer holds (in seq order, with the chain's nonce) and wait until they are confirmed.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rpc", default=None, help="chain JSON-RPC URL (default: CHAIN_RPC_URL)")
        parser.add_argument("--timeout", type=float, default=300.0,
                            help="seconds to wait for the re-anchored batches' confirmations")

    def handle(self, *args, **options) -> None:
        client = chain_client(rpc_url=options["rpc"])
        deadline = time.monotonic() + options["timeout"]
        reopened: set[int] = set()
        first = True
        while True:
            report = anchor_tick(client=client, recheck_all=first)
            if report.busy:  # the beat's tick runs: it re-checks too; wait for it
                time.sleep(POLL_SECONDS)
                continue
            first = False
            self._report(report, reopened)
            waiting = self._waiting(reopened)
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise CommandError(f"timed out; still open: {', '.join(waiting)} (run again, or let the beat finish)")
            time.sleep(POLL_SECONDS)
        self.stdout.write(f"ok: {len(reopened)} batches re-anchored" if reopened else
                          "ok: every confirmed anchor is on chain")

    def _report(self, report, reopened: set[int]) -> None:
        """Print what this tick found and did; fail on what needs a person."""
        for first_seq, last_seq in [*report.lost, *report.moved]:
            reopened.add(first_seq)
            self.stdout.write(f"batch {first_seq}..{last_seq}: no longer on chain as confirmed, re-anchoring")
        for first_seq, last_seq in report.confirmed:
            if first_seq in reopened:
                self.stdout.write(f"batch {first_seq}..{last_seq}: confirmed again")
        if report.conflict:
            raise CommandError(report.conflict)
        if report.unavailable:
            self.stderr.write(f"chain unavailable, retrying: {report.unavailable}")

    @staticmethod
    def _waiting(reopened: set[int]) -> list[str]:
        open_batches = AnchorBatch.objects.filter(first_seq__in=reopened).exclude(status="confirmed")
        return [f"{b.first_seq}..{b.last_seq} ({b.status})" for b in open_batches.order_by("first_seq")]
