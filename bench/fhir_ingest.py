"""Transaction-Bundle ingest over HTTP (gunicorn), against raw PostgreSQL COPY of the same rows.

Posts Synthea transaction Bundles (generated once, cached under /tmp/carrack-bench) to
``POST /fhir`` of a gunicorn this script starts on a free 127.0.0.1 port, from as many client
threads as workers, and reports resources/s validated, stored with history and indexed. The
reference is ``COPY`` of the same resource texts into a plain table in the same database.

Run it on a dedicated database, which it empties first (it refuses one holding >200k resources):

    createdb -h 127.0.0.1 -U postgres carrack_bench_ingest
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/carrack_bench_ingest \
        DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python manage.py migrate
    .venv/bin/python bench/fhir_ingest.py --patients 20 --workers 2 4
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import Gunicorn, api_token, arguments, django_setup, synthea_bundles, table  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/carrack_bench_ingest"
EHR_TABLES = ("ehr_resource", "ehr_resourceversion", "ehr_stringindex", "ehr_tokenindex", "ehr_dateindex",
              "ehr_referenceindex", "ehr_quantityindex", "ehr_numberindex", "ehr_uriindex")


def empty_database() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ehr_resource")
        if cursor.fetchone()[0] > 200_000:
            raise SystemExit("refusing to empty a database of >200k resources; use a dedicated one")
        cursor.execute(f"TRUNCATE {', '.join(EHR_TABLES)} RESTART IDENTITY CASCADE")
        cursor.execute("VACUUM ANALYZE")


def post_all(base: str, token: str, texts: list[str], clients: int) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    def post(text: str) -> int:
        with requests.Session() as session:
            response = session.post(f"{base}/fhir", data=text.encode(), headers=headers, timeout=600)
        assert response.status_code == 200, response.text[:300]
        return response.text.count('"201 Created"')

    with ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(post, texts))


def copy_reference(texts: list[str]) -> tuple[int, float]:
    """COPY of each entry's resource text (type, id, text) into a plain table; (rows, seconds)."""
    from django.db import connection

    rows = [(entry["resource"]["resourceType"], entry["fullUrl"][9:], json.dumps(entry["resource"]))
            for text in texts for entry in json.loads(text)["entry"]]
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw_resource")
        cursor.execute("CREATE TABLE bench_raw_resource (id bigserial PRIMARY KEY, resource_type text, "
                       "logical_id text, text text)")
        started = time.perf_counter()
        with cursor.cursor.copy("COPY bench_raw_resource (resource_type, logical_id, text) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        seconds = time.perf_counter() - started
        cursor.execute("DROP TABLE bench_raw_resource")
    return len(rows), seconds


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.set_defaults(database_url=DEFAULT_URL)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    args = parser.parse_args()
    django_setup(args.database_url)
    texts = [path.read_text() for path in synthea_bundles(args.patients, seed=11)]
    megabytes = sum(len(t) for t in texts) / 2**20
    print(f"{len(texts)} Bundles, {megabytes:.0f} MB")
    rows_copied, copy_seconds = copy_reference(texts)
    reference = rows_copied / copy_seconds
    rows = [["PostgreSQL COPY (reference)", "-", rows_copied, copy_seconds, reference, "1.00"]]
    for workers in args.workers:
        empty_database()
        token = api_token()
        with Gunicorn(args.database_url, workers=workers) as server:
            started = time.perf_counter()
            created = post_all(server.url, token, texts, clients=workers)
            seconds = time.perf_counter() - started
        rows.append(["POST /fhir transaction, gunicorn sync", workers, created, seconds, created / seconds,
                     f"{created / seconds / reference:.3f}"])
    print(table(["path", "workers", "resources", "seconds", "resources/s", "ratio to COPY"], rows))


if __name__ == "__main__":
    main()
