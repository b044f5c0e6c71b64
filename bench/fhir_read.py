"""Read by id (``GET /fhir/{type}/{id}``) from 16 concurrent clients, against a bare PK select.

Starts gunicorn on a free 127.0.0.1 port once per worker setting, and for each runs 16 client
threads (``requests.Session`` each, keep-alive) reading random existing resources for
``--seconds``; reports p50/p99 latency and requests/s. The reference is
``SELECT text FROM ehr_resource WHERE id = %s`` from 16 threads with one connection each.
The clients run on the same machine as the server, so on 2 cores they take CPU from it.

    .venv/bin/python bench/fhir_read.py                  # carrack_bench, every setting
    .venv/bin/python bench/fhir_read.py --seconds 20 --database-url postgres://...
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import Gunicorn, api_token, arguments, django_setup, median, percentile, table  # noqa: E402

CLIENTS = 16
SETTINGS = [  # (worker class, workers, threads, CONN_MAX_AGE)
    ("sync", 2, 1, 0),
    ("sync", 4, 1, 0),
    ("sync", 4, 1, 60),
    ("gthread", 2, 4, 0),
    ("gthread", 2, 4, 60),
    ("gthread", 2, 8, 60),
    ("gthread", 4, 4, 60),
]


def sample_ids(count: int) -> list[tuple[int, str, str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT id, resource_type, logical_id FROM ehr_resource TABLESAMPLE SYSTEM (1) "
                       "WHERE NOT deleted LIMIT %s", [count])
        return cursor.fetchall()


def hammer(seconds: float, request_once) -> tuple[list[float], float]:
    """Run ``request_once(state)`` from CLIENTS threads for ``seconds``; (latencies ms, req/s)."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS + 1)
    deadline = [0.0]

    def client(slot: int) -> None:
        state: dict = {}
        try:
            request_once(state)  # warm up: connect
        except BaseException:
            barrier.abort()
            raise
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            started = time.perf_counter()
            request_once(state)
            latencies[slot].append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    deadline[0] = started + seconds
    for thread in threads:
        thread.join()
    every = [value for slot in latencies for value in slot]
    return every, len(every) / (time.perf_counter() - started)


def http_reader(base: str, token: str, ids: list):
    def once(state: dict) -> None:
        if "session" not in state:
            state["session"] = requests.Session()
            state["session"].headers["Authorization"] = f"Bearer {token}"
        _, resource_type, logical_id = random.choice(ids)
        response = state["session"].get(f"{base}/fhir/{resource_type}/{logical_id}", timeout=30)
        assert response.status_code == 200, response.status_code

    return once


def sql_reader(database_url: str, ids: list):
    def once(state: dict) -> None:
        if "connection" not in state:
            state["connection"] = psycopg.connect(database_url, autocommit=True)
        pk = random.choice(ids)[0]
        state["connection"].execute("SELECT text FROM ehr_resource WHERE id = %s", [pk]).fetchone()

    return once


def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    django_setup(args.database_url)
    ids = sample_ids(5000)
    token = api_token()
    latencies, rate = hammer(args.seconds, sql_reader(args.database_url, ids))
    reference = percentile(latencies, 0.99)
    rows = [["SELECT text by PK (reference)", "-", len(latencies), median(latencies), reference, rate, "1.0"]]
    for worker_class, workers, threads, conn_max_age in SETTINGS:
        with Gunicorn(args.database_url, workers=workers, worker_class=worker_class, threads=threads,
                      conn_max_age=conn_max_age) as server:
            latencies, rate = hammer(args.seconds, http_reader(server.url, token, ids))
        label = f"gunicorn {worker_class} -w {workers}" + (f" --threads {threads}" if threads > 1 else "")
        rows.append([label, conn_max_age, len(latencies), median(latencies), percentile(latencies, 0.99),
                     rate, f"{percentile(latencies, 0.99) / reference:.1f}"])
        print(table(["server", "CONN_MAX_AGE", "requests", "p50 ms", "p99 ms", "req/s", "p99 ratio"],
                    rows[-1:]), flush=True)
    print(f"\n{CLIENTS} clients, {args.seconds:.0f} s each, {len(ids)} distinct resources\n")
    print(table(["server", "CONN_MAX_AGE", "requests", "p50 ms", "p99 ms", "req/s", "p99 ratio"], rows))


if __name__ == "__main__":
    main()
