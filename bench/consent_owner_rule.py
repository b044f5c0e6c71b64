"""What the consent check pays for "only the patient's own hospital's Consents count" (issue 11).

Runs on the database ``bench/consent.py`` leaves behind (its Patients, Consents and 100k mirror
tokens): the check as it is (``ledger.consents.check._CHECK_SQL``, with the EXISTS that compares the
token's Consent organization with its patient's owner in ``ledger_patientowner``) against the same statement without that EXISTS, for
random patients with tokens, alternating rounds:

    .venv/bin/python bench/consent.py --patients 300     # once, fills the database
    .venv/bin/python bench/consent_owner_rule.py [--checks 5000] [--rounds 3]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import arguments, django_setup, median, percentile, table  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/carrack_consent_bench"
GRANTEE = "Organization/bench-hosp-b"


def timed(cursor, sql: str, patients: list[str], checks: int) -> list[float]:
    from django.utils import timezone

    samples = []
    for _ in range(checks):
        started = time.perf_counter()
        cursor.execute(sql, {"patient": random.choice(patients), "grantee": GRANTEE, "purpose": "TREAT",
                             "at": timezone.now()})
        cursor.fetchone()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.set_defaults(database_url=DEFAULT_DATABASE_URL)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    django_setup(args.database_url)
    from django.db import connection

    from ledger.consents import check

    with_rule = check._CHECK_SQL
    without_rule = with_rule[:with_rule.index("  AND EXISTS (")] + with_rule[with_rule.index("  AND NOT EXISTS ("):]
    rows = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT patient_id FROM ledger_consenttoken WHERE consent_id IN "
                       "(SELECT logical_id FROM ehr_resource WHERE resource_type = 'Consent')")
        patients = [patient for (patient,) in cursor.fetchall()]
        for round_number in range(1, args.rounds + 1):
            reference = timed(cursor, without_rule, patients, args.checks)
            measured = timed(cursor, with_rule, patients, args.checks)
            rows.append([round_number, round(median(reference), 3), round(percentile(reference, 0.99), 3),
                         round(median(measured), 3), round(percentile(measured, 0.99), 3),
                         round(median(measured) / median(reference), 2)])
    print(f"{len(patients)} patients with tokens, {args.checks} checks per statement and round")
    print(table(["round", "without owner rule p50 ms", "p99 ms", "with owner rule p50 ms", "p99 ms",
                 "ratio p50"], rows))


if __name__ == "__main__":
    main()
