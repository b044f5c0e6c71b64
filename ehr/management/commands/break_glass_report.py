"""``manage.py break_glass_report [--since ISO]``: every declared emergency access, for review.

Reads the audit log (``ledger.AuditEntry``): entries whose AuditEvent carries the ``BTG``
security label, with who, when, what (interaction, resource or query, patient), the
outcome and the reason the clinician gave.
"""

from __future__ import annotations

import base64
import json

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from ledger.models import AuditEntry

BTG_MARKER = '"code":"BTG"'


class Command(BaseCommand):
    help = "List break-the-glass accesses: who, when, what and why."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--since", help="only accesses at or after this ISO 8601 instant")
        parser.add_argument("--json", action="store_true", help="one JSON object per line")

    def handle(self, *args, **options) -> None:
        entries = AuditEntry.objects.filter(event__contains=BTG_MARKER).order_by("recorded", "id")
        if options["since"]:
            since = parse_datetime(options["since"])
            if since is None or since.tzinfo is None:
                raise CommandError("--since must be an ISO 8601 instant with a time zone")
            entries = entries.filter(recorded__gte=since)
        count = 0
        for entry in entries.iterator():
            row = break_glass_row(entry)
            if row is None:
                continue
            count += 1
            if options["json"]:
                self.stdout.write(json.dumps(row))
            else:
                self.stdout.write("{when}  {who}  {what}  patient={patient}  outcome={outcome}  "
                                  "reason: {reason}".format(**row))
        self.stderr.write(f"{count} break-the-glass access(es)")


def break_glass_row(entry: AuditEntry) -> dict | None:
    """Who/when/what/why of one entry, or None when its event is not flagged BTG."""
    event = json.loads(entry.event)
    labels = (event.get("meta") or {}).get("security") or []
    if not any(label.get("code") == "BTG" for label in labels):
        return None
    reason = next((purpose.get("text") for purpose in event.get("purposeOfEvent", [])
                   if any(c.get("code") == "BTG" for c in purpose.get("coding", []))), None)
    return {
        "id": entry.pk,
        "when": entry.recorded.isoformat(),
        "who": entry.agent,
        "what": _what(event),
        "patient": entry.patient_id or "-",
        "outcome": entry.outcome,
        "reason": reason or "",
    }


def _what(event: dict) -> str:
    interaction = (event.get("subtype") or [{}])[0].get("code", "?")
    for entity in event.get("entity", []):
        if entity.get("role", {}).get("code") == "4":
            return f"{interaction} {entity['what']['reference']}"
        if "query" in entity:
            return f"{interaction} ?{base64.b64decode(entity['query']).decode(errors='replace')}"
    return interaction
