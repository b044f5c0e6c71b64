"""What the required-binding check (``ehr/bindings.py``) costs transaction-Bundle ingest.

Synthea transaction Bundles (generated once, cached under /tmp/carrack-bench) go through the
service that ``POST /fhir`` calls (``ehr.services.bundle_process``: validation, storage with
history, indexes), with ``FHIR_VALIDATE_BINDINGS`` on and off in alternating rounds of the same
run (in turn off/on and on/off), the database emptied before each round. A last row times ``bindings.check`` alone over
every resource. Goal: the check costs < 15 % of ingest time.

Run it on a dedicated, migrated database, which it empties (it refuses one of >200k resources):

    createdb -h 127.0.0.1 -U postgres carrack_bench_ingest
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/carrack_bench_ingest \
        DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python manage.py migrate
    .venv/bin/python bench/bench_bindings.py --patients 5 --rounds 4
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import arguments, django_setup, median, synthea_bundles, table  # noqa: E402
from fhir_ingest import DEFAULT_URL, empty_database  # noqa: E402


def ingest(texts: list[str], *, check_bindings: bool) -> tuple[int, float]:
    """(resources created, seconds) for the Bundles posted one after the other."""
    from django.conf import settings

    from ehr.services import bundle_process

    settings.FHIR_VALIDATE_BINDINGS = check_bindings
    empty_database()
    created, started = 0, time.perf_counter()
    for text in texts:
        _, body = bundle_process(text=text, handle_get=lambda url: (404, ""), organization_id="bench-hospital")
        created += body.count('"201 Created"')
    seconds = time.perf_counter() - started
    settings.FHIR_VALIDATE_BINDINGS = True
    return created, seconds


def check_alone(texts: list[str]) -> tuple[int, float, int]:
    """(resources, seconds, issues) of ``bindings.check`` on each Bundle entry's resource."""
    from ehr import bindings, fhirjson

    resources = [entry["resource"] for text in texts for entry in fhirjson.loads(text)["entry"]]
    started = time.perf_counter()
    found = sum(len(bindings.check(resource, strict=False)) for resource in resources)
    return len(resources), time.perf_counter() - started, found


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.set_defaults(database_url=DEFAULT_URL)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    django_setup(args.database_url)
    texts = [path.read_text(encoding="utf-8") for path in synthea_bundles(args.patients, args.seed)]
    print(f"{len(texts)} Bundles, {sum(len(t) for t in texts) / 1e6:.1f} MB", file=sys.stderr)

    seconds: dict[bool, list[float]] = {True: [], False: []}
    resources = 0
    for round_ in range(args.rounds):  # off/on, then on/off: neither always runs on a warmer cache
        for on in ((False, True) if round_ % 2 == 0 else (True, False)):
            resources, elapsed = ingest(texts, check_bindings=on)
            seconds[on].append(elapsed)
    empty_database()
    off, on = median(seconds[False]), median(seconds[True])
    count, alone, issues = check_alone(texts)
    rows = [
        ["bindings off (FHIR_VALIDATE_BINDINGS=False)", resources, off, resources / off, 1.0],
        ["bindings on (default)", resources, on, resources / on, off / on],
        [f"bindings.check alone ({issues} issues)", count, alone, count / alone, off / (off + alone)],
    ]
    print(table(["ingest (service layer, median of rounds)", "resources", "seconds", "resources/s",
                 "ratio to off"], rows))
    print(f"\ncost of the check: {100 * (on - off) / on:.1f} % of ingest time (on vs off), "
          f"{100 * alone / on:.1f} % timed alone; goal < 15 %")


if __name__ == "__main__":
    main()
