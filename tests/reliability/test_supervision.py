"""The supervisor restarts what dies: kill -9 each child of a real stack, then a crash loop.

While each fault runs, one thread reads ``/fhir/metadata`` every 100 ms and another writes a
Patient every 200 ms with the banner's demo token. Afterwards every acknowledged (201) write
must be readable. The figures (sent, acknowledged, present, 5xx, seconds to recover) are
printed (``pytest -s``) and appended to ``FIGURES`` for the closing note of issue 12.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field

import psutil
import pytest

from config.stack.services import port_is_open

FIGURES: list[dict] = []


@pytest.fixture(scope="module")
def stack_environment() -> dict[str, str]:
    return {"CARRACK_NODE_NAME": "reliability-supervision"}


@dataclass
class Traffic:
    """Reads and writes against the stack from two threads until stopped."""

    base: str
    token: str
    label: str
    reads: Counter = field(default_factory=Counter)
    writes: Counter = field(default_factory=Counter)
    acknowledged: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._write, daemon=True)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _request(self, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/fhir+json"}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}/fhir/{path}", data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as error:
            return error.code, {}
        except OSError:
            return 0, {}  # no answer at all: refused, reset or timed out

    def _read(self) -> None:
        while not self._stop.wait(0.1):
            self.reads[self._request("metadata", timeout=10)[0]] += 1

    def _write(self) -> None:
        number = 0
        while not self._stop.wait(0.2):
            number += 1
            patient = {"resourceType": "Patient", "name": [{"family": f"{self.label}-{number}"}]}
            status, body = self._request("Patient", patient)
            self.writes[status] += 1
            if status == 201:
                self.acknowledged.append(body["id"])

    def present(self) -> int:
        return sum(self._request(f"Patient/{pid}")[0] == 200 for pid in self.acknowledged)


def figures(name: str, traffic: Traffic, present: int, recovered_s: float) -> dict:
    row = {
        "fault": name,
        "writes_sent": sum(traffic.writes.values()),
        "acknowledged": len(traffic.acknowledged),
        "present_after": present,
        "write_5xx": sum(n for status, n in traffic.writes.items() if status >= 500),
        "write_no_answer": traffic.writes[0],
        "reads_sent": sum(traffic.reads.values()),
        "read_non_2xx": sum(n for status, n in traffic.reads.items() if not 200 <= status < 300),
        "recovered_s": round(recovered_s, 1),
        "write_statuses": dict(sorted(traffic.writes.items())),
        "read_statuses": dict(sorted(traffic.reads.items())),
    }
    FIGURES.append(row)
    print(f"\nfigures {json.dumps(row)}")
    return row


def kill_and_recover(stack, name: str) -> dict:
    """kill -9 one child under traffic; the seconds until /healthz is 200 again; the figures."""
    assert stack.wait_healthy() < 60
    with Traffic(stack.base, stack.token, f"Fault-{name}") as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        old = stack.kill(name)
        if name == "postgres":  # PostgreSQL finds its own stale lock file on the next start
            assert f"{old}" == (stack.state_dir / "postgres" / "postmaster.pid").read_text().split()[0]
        stack.wait_for_new(name, old)
        stack.wait_healthy(60)
        recovered = time.monotonic() - killed_at
        time.sleep(1.0)
    row = figures(name, traffic, traffic.present(), recovered)
    assert row["acknowledged"] > 0 and row["present_after"] == row["acknowledged"], row
    assert f"carrack: {name} exited" in stack.text() and f"carrack: {name} is back" in stack.text()
    return row


def worker_up(stack) -> bool:
    return stack.health()[1].get("checks", {}).get("worker", {}).get("status") == "up"


def test_killing_the_worker_leaves_web_answering_and_it_is_back_within_10_s(stack):
    assert stack.wait_healthy() < 60
    with Traffic(stack.base, stack.token, "Fault-worker") as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        stack.wait_for_new("worker", stack.kill("worker"))
        while not worker_up(stack) and time.monotonic() - killed_at < 20:
            time.sleep(0.1)
        recovered = time.monotonic() - killed_at
        time.sleep(1.0)
    row = figures("worker", traffic, traffic.present(), recovered)

    assert recovered < 10, "the worker was not back within 10 s"
    assert row["read_non_2xx"] == 0 and row["reads_sent"] > 10, traffic.reads
    assert set(traffic.writes) == {201}, traffic.writes
    assert row["present_after"] == row["acknowledged"]


def test_killing_beat_leaves_web_answering_and_it_is_back(stack):
    with Traffic(stack.base, stack.token, "Fault-beat") as traffic:
        time.sleep(1.0)
        killed_at = time.monotonic()
        stack.wait_for_new("beat", stack.kill("beat"))
        while "carrack: beat is back" not in stack.text():
            assert time.monotonic() - killed_at < 20
            time.sleep(0.1)
        recovered = time.monotonic() - killed_at
        time.sleep(1.0)
    row = figures("beat", traffic, traffic.present(), recovered)

    assert row["read_non_2xx"] == 0 and set(traffic.writes) == {201}, (traffic.reads, traffic.writes)
    assert row["present_after"] == row["acknowledged"] and stack.health()[0] == 200


@pytest.mark.parametrize("name", ["postgres", "redis", "anvil"])
def test_a_killed_backing_server_is_restarted_and_no_acknowledged_write_is_lost(stack, name):
    row = kill_and_recover(stack, name)

    assert row["recovered_s"] < 60
    assert stack.process.poll() is None
    assert stack.health()[0] == 200


def test_a_crash_loop_stops_the_stack_and_names_the_log(stack):
    """beat killed each time it comes back: the fifth death within a minute stops everything."""
    killed: set[int] = set()
    deadline = time.monotonic() + 90
    while stack.process.poll() is None and time.monotonic() < deadline:
        try:
            pid = stack.pid_of("beat")
            if pid not in killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        except (LookupError, psutil.Error, ProcessLookupError):
            pass  # between two starts, or the stack is stopping
        time.sleep(0.05)

    code = stack.process.wait(60)
    time.sleep(0.5)  # the reader thread drains the last lines
    output = stack.text()
    assert code == 1, output[-2000:]
    assert "beat died 5 times within 60s" in output
    assert f"see {stack.state_dir / 'log' / 'beat.log'}" in output
    assert "Traceback" not in output
    assert not any(port_is_open(port) for port in stack.ports.values())
    assert 1 <= len(killed) <= 5  # the beat test's kill a moment ago may count as the first death
    assert not [p.pid for p in psutil.process_iter(["cmdline"])
                if str(stack.state_dir) in " ".join(p.info["cmdline"] or [])]
    print("\nfigures table:\n" + "\n".join(json.dumps(row) for row in FIGURES))
