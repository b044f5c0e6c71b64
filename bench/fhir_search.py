"""Search latency on a database of a million resources, against hand-written SQL.

Two steps, both against ``--database-url`` (default ``carrack_bench``, migrated beforehand; see
``bench/_support.py``):

    # once: replicate 20 Synthea patients with fresh UUIDs until the database holds 1M resources,
    # ingested through ehr.services.bundle_process by 2 processes (~25 min on 2 cores)
    .venv/bin/python bench/fhir_search.py build --resources 1000000

    # then, as often as wanted: p50/p95 of three searches over 200 parameter values each
    .venv/bin/python bench/fhir_search.py run

The searches run in-process through the engine (``parse_search``, ``run_search``,
``searchset_bundle``), which is what a gunicorn worker does after routing, without and with the
access filter of an integration account (``ehr.rules.visible``); the reference is the
same filter written by hand as one SQL statement on the index tables. ``run`` also prints
``EXPLAIN ANALYZE`` of the slowest engine query and the database size per million resources.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
import uuid
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import arguments, django_setup, median, percentile, synthea_bundles, table  # noqa: E402

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FAMILY = re.compile(r'("family"\s*:\s*")([^"]+)(")')
BIRTH_DATE = re.compile(r'("birthDate"\s*:\s*")(\d{4}-\d{2}-\d{2})(")')
SYLLABLES = ["ba", "ko", "ri", "su", "te", "lo", "mi", "na", "pe", "zu", "da", "fi", "go", "hu", "ve", "xa"]
SAMPLES = 200


def replicate(text: str, copy: int) -> str:
    """The Bundle with every UUID replaced consistently, family names suffixed, birth dates moved."""
    rng = random.Random(copy)
    fresh: dict[str, str] = {}
    text = UUID.sub(lambda m: fresh.setdefault(m.group(0), str(uuid.UUID(int=rng.getrandbits(128), version=4))),
                    text)
    suffix = SYLLABLES[copy % 16] + SYLLABLES[(copy // 16) % 16]
    text = FAMILY.sub(lambda m: m.group(1) + m.group(2) + suffix + m.group(3), text)
    return BIRTH_DATE.sub(lambda m: m.group(1) + _shift(m.group(2), rng.randint(-400, 400)) + m.group(3), text)


def _shift(day: str, days: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def _init_worker(database_url: str) -> None:
    django_setup(database_url)


def _ingest(task: tuple[str, int]) -> int:
    from ehr.services import bundle_process

    path, copy = task
    _, body = bundle_process(text=replicate(Path(path).read_text(), copy),
                             handle_get=lambda url: (404, ""), organization_id="bench-hospital")
    return body.count('"201 Created"')


def build(database_url: str, resources: int, patients: int, processes: int) -> None:
    django_setup(database_url)
    from ehr.models import Resource

    have = Resource.objects.count()
    bundles = synthea_bundles(patients, seed=7)
    sizes = [len(json.loads(p.read_text())["entry"]) for p in bundles]
    tasks, planned, copy = [], have, 1000
    while planned < resources:
        index = copy % len(bundles)
        tasks.append((str(bundles[index]), copy))
        planned += sizes[index]
        copy += 1
    print(f"{have:,} resources present; ingesting {len(tasks)} bundles (~{planned - have:,} resources)")
    from django.db import connections

    connections.close_all()  # forked workers must not share the parent's connection
    started, done = time.monotonic(), 0
    with Pool(processes, initializer=_init_worker, initargs=(database_url,)) as pool:
        for number, count in enumerate(pool.imap_unordered(_ingest, tasks), 1):
            done += count
            if number % 50 == 0:
                print(f"  {number}/{len(tasks)} bundles, {done:,} resources, "
                      f"{done / (time.monotonic() - started):,.0f}/s", flush=True)
    seconds = time.monotonic() - started
    print(f"built: {done:,} resources in {seconds:,.0f} s ({done / seconds:,.0f} resources/s)")
    _own_by_bench_hospital()
    _analyze()


def _own_by_bench_hospital() -> None:
    """Rows written without a caller belong to no one: give them to the benchmark's hospital."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE ehr_resource SET organization_id = 'bench-hospital' WHERE organization_id IS NULL")


def _analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


# --- the three searches: parameter values sampled from the data, engine vs hand-written SQL ---

OBSERVATION_SQL = """
SELECT r.text FROM ehr_resource r
WHERE r.resource_type = 'Observation' AND NOT r.deleted
  AND EXISTS (SELECT 1 FROM ehr_referenceindex i WHERE i.resource_id = r.id AND i.resource_type = 'Observation'
              AND i.param = 'patient' AND i.target_type = 'Patient' AND i.target_id = %s)
  AND EXISTS (SELECT 1 FROM ehr_tokenindex i WHERE i.resource_id = r.id AND i.resource_type = 'Observation'
              AND i.param = 'code' AND i.code = %s AND i.system = 'http://loinc.org')
  AND EXISTS (SELECT 1 FROM ehr_dateindex i WHERE i.resource_id = r.id AND i.resource_type = 'Observation'
              AND i.param = 'date' AND (i.high IS NULL OR i.high >= %s))
ORDER BY r.id LIMIT 21
"""
PATIENT_SQL = """
SELECT r.text FROM ehr_resource r
WHERE r.resource_type = 'Patient' AND NOT r.deleted
  AND EXISTS (SELECT 1 FROM ehr_stringindex i WHERE i.resource_id = r.id AND i.resource_type = 'Patient'
              AND i.param = 'name' AND i.value LIKE %s)
  AND EXISTS (SELECT 1 FROM ehr_dateindex i WHERE i.resource_id = r.id AND i.resource_type = 'Patient'
              AND i.param = 'birthdate' AND i.low >= %s AND i.high <= %s)
ORDER BY r.id LIMIT 21
"""
ENCOUNTER_SQL = """
SELECT r.text FROM ehr_resource r
JOIN ehr_referenceindex p ON p.resource_id = r.id AND p.resource_type = 'Encounter' AND p.param = 'patient'
  AND p.target_type = 'Patient' AND p.target_id = %s
WHERE r.resource_type = 'Encounter' AND NOT r.deleted
ORDER BY (SELECT max(d.high) FROM ehr_dateindex d WHERE d.resource_id = r.id AND d.param = 'date') DESC NULLS LAST,
         r.id LIMIT 21
"""


def _sample(sql: str) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def observation_cases() -> list[tuple[str, list, tuple]]:
    rows = _sample(f"""
        SELECT p.target_id, c.code FROM ehr_referenceindex p TABLESAMPLE SYSTEM (5)
        JOIN ehr_tokenindex c ON c.resource_id = p.resource_id AND c.param = 'code' AND c.system = 'http://loinc.org'
        WHERE p.resource_type = 'Observation' AND p.param = 'patient' LIMIT {SAMPLES}""")
    return [("Observation?patient=&code=&date=ge2015-01-01",
             [("patient", pid), ("code", f"http://loinc.org|{code}"), ("date", "ge2015-01-01")],
             (OBSERVATION_SQL, (pid, code, "2015-01-01"))) for pid, code in rows]


def patient_cases() -> list[tuple[str, list, tuple]]:
    rows = _sample(f"""
        SELECT n.exact, b.low::date FROM ehr_stringindex n
        JOIN ehr_dateindex b ON b.resource_id = n.resource_id AND b.param = 'birthdate'
        WHERE n.resource_type = 'Patient' AND n.param = 'family' ORDER BY random() LIMIT {SAMPLES}""")
    return [("Patient?name=&birthdate=",
             [("name", family), ("birthdate", born.isoformat())],
             (PATIENT_SQL, (_fold(family) + "%", born.isoformat(), born.isoformat() + " 23:59:59.999999+00")))
            for family, born in rows]


def encounter_cases() -> list[tuple[str, list, tuple]]:
    rows = _sample(f"""
        SELECT logical_id FROM ehr_resource WHERE resource_type = 'Patient' ORDER BY random() LIMIT {SAMPLES}""")
    return [("Encounter?patient=&_sort=-date&_count=20",
             [("patient", pid), ("_sort", "-date"), ("_count", "20")],
             (ENCOUNTER_SQL, (pid,))) for (pid,) in rows]


def _fold(value: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", value) if not unicodedata.combining(c)).casefold()


def integration_filter():
    """What an integration account of the benchmark's hospital may see (every row, by the build)."""
    from access.models import Role
    from access.policy import AccessContext
    from ehr.rules import visible

    return visible(AccessContext(user=None, role=Role.INTEGRATION, organization_id="bench-hospital"))


def time_engine(resource_type: str, params: list, access=None) -> tuple[float, int]:
    from ehr.search import parse_search, run_search, searchset_bundle

    started = time.perf_counter()
    query = parse_search(resource_type, params, strict=True)
    result = run_search(query, visible=access)
    body = searchset_bundle(result, base_url="http://127.0.0.1/fhir", resource_type=resource_type, query=query)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, len(body)


def time_sql(sql: str, values: tuple) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        cursor.fetchall()
    return (time.perf_counter() - started) * 1000


def explain(resource_type: str, params: list) -> str:
    from ehr.search import parse_search
    from ehr.search.engine import _ordered, matching

    query = parse_search(resource_type, params, strict=True)
    page = _ordered(matching(query), query.sort)[:query.count + 1]
    return page.explain(analyze=True, buffers=True)


def run(database_url: str) -> None:
    django_setup(database_url)
    from django.db import connection

    rows = []
    access = integration_filter()
    slowest: tuple[float, str, list] = (0.0, "", [])
    for resource_type, cases in (("Observation", observation_cases()), ("Patient", patient_cases()),
                                 ("Encounter", encounter_cases())):
        engine, guarded, reference = [], [], []
        for _, params, (sql, values) in cases:  # warm the cache: every run below reads from memory
            time_engine(resource_type, params)
        for label, params, (sql, values) in cases:
            elapsed, _ = time_engine(resource_type, params)
            engine.append(elapsed)
            guarded.append(time_engine(resource_type, params, access)[0])
            reference.append(time_sql(sql, values))
            if elapsed > slowest[0]:
                slowest = (elapsed, resource_type, params)
        rows.append([cases[0][0], len(cases), median(engine), percentile(engine, 0.95),
                     median(guarded), percentile(guarded, 0.95), median(reference), percentile(reference, 0.95),
                     f"{percentile(engine, 0.95) / percentile(reference, 0.95):.1f}x"])
    print(table(["search", "values", "engine p50 ms", "engine p95 ms", "+access p50 ms", "+access p95 ms",
                 "SQL p50 ms", "SQL p95 ms", "engine/SQL p95"], rows))
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ehr_resource")
        resources = cursor.fetchone()[0]
        cursor.execute("""SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c
                          JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE c.relkind = 'r' AND c.relname LIKE 'ehr\\_%' AND n.nspname = 'public'""")
        size = int(cursor.fetchone()[0])
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0]
    print(f"\n{resources:,} resources; ehr tables {size / 2**30:.2f} GiB "
          f"({size / 2**30 / resources * 1e6:.2f} GiB per million resources); {version}")
    print(f"\nslowest engine query ({slowest[0]:.1f} ms): {slowest[1]}?{slowest[2]}\n")
    print(explain(slowest[1], slowest[2]))


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("step", choices=["build", "run"])
    parser.add_argument("--resources", type=int, default=1_000_000, help="build: target row count")
    parser.add_argument("--patients", type=int, default=20, help="build: Synthea patients replicated")
    parser.add_argument("--processes", type=int, default=2, help="build: ingesting processes")
    args = parser.parse_args()
    if args.step == "build":
        build(args.database_url, args.resources, args.patients, args.processes)
    else:
        run(args.database_url)


if __name__ == "__main__":
    main()
