"""Jobs fixtures: the tests' job kinds, a Redis of the test's own as broker, a worker process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.db import connection

from config.celery import app
from config.stack.services import BASE_DIR, RedisServer, free_port
from jobs.broker import PUBLISHER
from tests.jobs import kinds  # noqa: F401 - registers tests.count, tests.fails, tests.flaky


def use_broker(url: str) -> None:
    """Point the app's publishing at ``url``: new connection and producer pools, a fresh publisher."""
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None
    PUBLISHER.reset()


@pytest.fixture
def broker(tmp_path):
    """A Redis of this test's own, made the Celery app's broker for the test."""
    server = RedisServer(name="broker", state_dir=tmp_path / "broker", port=free_port())
    server.start()
    previous = app.conf.broker_url
    use_broker(server.url)
    yield server
    use_broker(previous)
    server.stop()


@pytest.fixture
def eager():
    """Tasks run in this process when published (the real task, without a broker round trip)."""
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def worker_process(broker_url: str, log_path, **environment: str) -> subprocess.Popen:
    """A real Celery worker (solo pool: the job runs in this very process) on the test database."""
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="config.settings.test", REDIS_URL=broker_url,
               DATABASE_URL=database_url, **environment)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
             "--include", "tests.jobs.kinds", "--hostname", f"jobs-{os.getpid()}-{free_port()}@%h",
             "--loglevel", "INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"],
            cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
