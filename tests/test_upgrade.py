"""A state written by the code before the foundation issue upgrades and reads back the same.

``tests/fixtures/upgrade/state.sql`` is a data-only dump made by that code (``make_state.py``
says how): records, a Consent whose token is active on chain, a read the token allowed and
the audit log anchored in a confirmed batch. Here it is loaded into a fresh database migrated
to the migrations it was written under, today's migrations run over it as ``make run`` would,
and today's code must read it back: every row still there, the records, the consent check
answering with the same token, the audit hash chain and batch roots verifying.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from config.stack.services import BASE_DIR

FIXTURE = Path(__file__).parent / "fixtures" / "upgrade"
STATE = json.loads((FIXTURE / "state.json").read_text())
# Written by migrate itself (its log, and post_migrate's rows for every model), not by the dump.
MIGRATE_OWN = {"django_migrations", "django_content_type", "auth_permission"}


def _connect(dbname: str) -> psycopg.Connection:
    db = settings.DATABASES["default"]
    return psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db.get("PASSWORD") or None,
                           dbname=dbname, autocommit=True)


@pytest.fixture
def old_database():
    """An empty database of its own on the test server; its URL, dropped afterwards."""
    db = settings.DATABASES["default"]
    name = f"upgrade_{uuid.uuid4().hex[:12]}"
    with _connect(db["NAME"]) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name, f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}"
    with _connect(db["NAME"]) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _django(url: str, *args: str) -> str:
    env = dict(os.environ, DATABASE_URL=url, DJANGO_SETTINGS_MODULE="config.settings.test")
    done = subprocess.run([sys.executable, *args], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def _dump_sql() -> str:
    """The dump without psql's meta-commands (``\\restrict``), which the server does not know."""
    return "\n".join(line for line in (FIXTURE / "state.sql").read_text().splitlines()
                     if not line.startswith("\\"))


def _row_counts(conn: psycopg.Connection) -> dict[str, int]:
    tables = [name for (name,) in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]
    return {table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}


def _profiles(conn: psycopg.Connection) -> list[list]:
    return [list(row) for row in conn.execute(
        "SELECT u.username, p.role, p.organization_id FROM ehr_accessprofile p "
        "JOIN auth_user u ON u.id = p.user_id ORDER BY u.username")]


def test_a_pre_foundation_state_upgrades_and_reads_back_the_same(old_database):
    name, url = old_database
    _django(url, "-m", "tests.fixtures.upgrade.steps", "old")
    with _connect(name) as conn:
        conn.execute(_dump_sql())
    with _connect(name) as conn:  # the dump empties its session's search_path
        before, profiles = _row_counts(conn), _profiles(conn)
    assert before["ehr_resource"] >= 2 and before["ledger_auditentry"] == STATE["audit_entries"]

    _django(url, "manage.py", "migrate", "--no-input", "-v", "0")

    with _connect(name) as conn:
        after = _row_counts(conn)
        assert _profiles(conn) == profiles
    kept = {table: after.get(table) for table in before if table not in MIGRATE_OWN}
    assert kept == {table: count for table, count in before.items() if table not in MIGRATE_OWN}
    assert all(after[table] >= before[table] for table in MIGRATE_OWN)

    read = json.loads(_django(url, "-m", "tests.fixtures.upgrade.steps", "readback").strip().splitlines()[-1])
    assert read["patient"] == ["1961-07-19", "MRN-778899", ["Quill", "Zebediah"]]
    assert read["observation_subject"] == f"Patient/{STATE['patient']}"
    assert read["consent_check"] == STATE["token"]
    assert read["token_status"] == "active"
    assert read["audit_verified"] == [STATE["audit_entries"], STATE["batches"]]
    assert read["confirmed_batches"] == STATE["batches"]
    assert [tuple(p) for p in read["profiles"]] == [tuple(p) for p in profiles]
