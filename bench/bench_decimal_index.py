"""Create + index throughput of Observations with ordinary decimals vs huge and precise ones.

Since the number and quantity indexes are ``numeric`` without typmod (``ehr.numeric``), a
decimal is indexed as written: ``1e+245``, ``1e-25``, 30 significant digits, up to 1,000
digits, with no clamping. This measures what that costs on the write path that matters:
``resource_create`` (parse, validate, store with history, extract and COPY the index rows),
in-process on one connection, the same number of Observations for each kind of value, each
batch in a transaction rolled back afterwards (the database is left as it was). The ratio is
each kind's resources/s against the ordinary values of the same run.

    .venv/bin/python bench/bench_decimal_index.py --database-url postgres://…/carrack_bench -n 600 --rounds 5

It writes nothing that stays, so any migrated database will do (the 1M one of fhir_search too).
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import arguments, django_setup, table  # noqa: E402

KINDS = {
    "ordinary (72, 5.4, 107.50)": lambda rng: rng.choice(["72", "5.4", "107.50", "0.8", "140"]),
    "huge (1e+200 … 9.9e+300)": lambda rng: f"{rng.randint(1, 99) / 10}e+{rng.randint(200, 300)}",
    "tiny (1e-25 … 1e-300)": lambda rng: f"{rng.randint(1, 99) / 10}e-{rng.randint(25, 300)}",
    "30 significant digits": lambda rng: f"{rng.randint(10 ** 29, 10 ** 30 - 1)}e-{rng.randint(0, 40)}",
    "1,000 significant digits": lambda rng: f"0.{rng.randint(10 ** 999, 10 ** 1000 - 1)}",
}


def observation(patient_id: str, value: str) -> str:
    return ('{"resourceType":"Observation","status":"final",'
            '"code":{"coding":[{"system":"http://loinc.org","code":"2339-0"}]},'
            f'"subject":{{"reference":"Patient/{patient_id}"}},"effectiveDateTime":"2024-05-01T10:00:00Z",'
            f'"valueQuantity":{{"value":{value},"unit":"mg/dL","system":"http://unitsofmeasure.org",'
            '"code":"mg/dL"}}')


class Rollback(Exception):
    """Leaves the benchmark's writes out of the database."""


def timed_creates(texts: list[str], patient_text: str) -> float:
    """Seconds for ``resource_create`` of every text, in one transaction rolled back after."""
    from django.db import transaction

    from ehr.services.resources import resource_create

    seconds = 0.0
    try:
        with transaction.atomic():
            patient = resource_create(resource_type="Patient", text=patient_text).resource
            bodies = [text.replace("{patient}", patient.logical_id) for text in texts]
            started = time.perf_counter()
            for body in bodies:
                resource_create(resource_type="Observation", text=body)
            seconds = time.perf_counter() - started
            raise Rollback
    except Rollback:
        pass
    return seconds


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=2000, help="Observations per kind")
    parser.add_argument("--rounds", type=int, default=3, help="the best of this many rounds")
    args = parser.parse_args()
    django_setup(args.database_url)
    patient_text = '{"resourceType":"Patient","name":[{"family":"Bench"}]}'
    rng = random.Random(14)
    texts = {kind: [observation("{patient}", make(rng)) for _ in range(args.count)] for kind, make in KINDS.items()}
    timed_creates(texts[next(iter(KINDS))][:200], patient_text)  # warm caches (search plans, models)
    best = dict.fromkeys(texts, float("inf"))
    for _ in range(args.rounds):  # kinds interleaved, so a busy moment of the machine hits them all
        for kind, batch in texts.items():
            best[kind] = min(best[kind], timed_creates(batch, patient_text))
    reference = args.count / best[next(iter(KINDS))]
    rows = [[kind, args.count, seconds, args.count / seconds, f"{args.count / seconds / reference:.2f}"]
            for kind, seconds in best.items()]
    print(table(["values", "Observations", "seconds (best)", "created + indexed /s", "ratio to ordinary"],
                rows))


if __name__ == "__main__":
    main()
