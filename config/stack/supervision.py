"""Keep every child of the stack running: restart with backoff, dependents after their servers.

Why our own and not circus, supervisor or honcho (docs/operations.md, "Processes and
supervision"): none of them waits for a child to be *ready* (a PostgreSQL that accepts a
connection, an anvil that answers JSON-RPC) before starting what needs it, and the probes,
the ordered shutdown and the readiness wait already live in ``services.py``. What is added
here is the restart policy alone.

A child is ``up``, ``down`` (dead, waiting for its backoff and for the servers it needs) or
``starting`` (spawned, not yet ready). A server's dependents keep running while it restarts:
web answers 503 meanwhile, Celery reconnects to its broker by itself. A child that dies
``CRASH_LOOP_DEATHS`` times within ``CRASH_LOOP_SECONDS`` stops the whole stack.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

from .services import AppProcess, Server, StackError

CRASH_LOOP_DEATHS = 5
CRASH_LOOP_SECONDS = 60.0
FIRST_BACKOFF_SECONDS = 0.25
MAX_BACKOFF_SECONDS = 10.0
START_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.2


@dataclass
class Child:
    """One supervised process and its restart bookkeeping."""

    server: Server
    state: str = "up"
    deaths: deque[float] = field(default_factory=deque)
    retry_at: float = 0.0
    since: float = 0.0

    @property
    def needs(self) -> tuple[str, ...]:
        return self.server.needs if isinstance(self.server, AppProcess) else ()


class Supervisor:
    """Watches children until one crash-loops (``StackError``) or the caller is interrupted."""

    def __init__(self, servers: list[Server]) -> None:
        self.children = [Child(server) for server in servers]
        self.by_name = {child.server.name: child for child in self.children}

    def watch(self) -> None:
        while True:
            self.tick(time.monotonic())
            time.sleep(POLL_SECONDS)

    def tick(self, now: float) -> None:
        for child in self.children:
            if child.state == "up" and not child.server.is_running():
                self._died(child, now)
            elif child.state == "down" and now >= child.retry_at and self._needs_ready(child):
                self._spawn(child, now)
            elif child.state == "starting":
                self._check_starting(child, now)

    def _died(self, child: Child, now: float) -> None:
        """Reap what the child left, stop the stack on a crash loop, else schedule a restart."""
        server = child.server
        code = server.process.returncode if server.process else None
        server.reap()
        while child.deaths and now - child.deaths[0] > CRASH_LOOP_SECONDS:
            child.deaths.popleft()
        child.deaths.append(now)
        if len(child.deaths) >= CRASH_LOOP_DEATHS:
            raise StackError(
                f"{server.name} died {len(child.deaths)} times within {CRASH_LOOP_SECONDS:.0f}s "
                f"(last exit status {code}): stopping everything; see {server.log_path}"
            )
        delay = min(FIRST_BACKOFF_SECONDS * 2 ** (len(child.deaths) - 1), MAX_BACKOFF_SECONDS)
        child.state, child.retry_at, child.since = "down", now + delay, now
        _say(f"{server.name} exited (status {code}); restarting in {delay:g}s; see {server.log_path}")

    def _needs_ready(self, child: Child) -> bool:
        return all(self.by_name[name].state == "up" for name in child.needs if name in self.by_name)

    def _spawn(self, child: Child, now: float) -> None:
        try:
            child.server.spawn()
        except StackError as error:  # e.g. its port still taken: counts as a failed start
            _say(str(error))
            child.server.process = None
            child.state = "up"  # so that the next tick records the death
            return
        child.state = "starting"
        child.retry_at = now + START_TIMEOUT_SECONDS

    def _check_starting(self, child: Child, now: float) -> None:
        server = child.server
        if not server.is_running():
            self._died(child, now)
        elif server.is_ready():
            try:
                server.after_ready()
            except Exception:  # noqa: BLE001 - its client's error right after the probe: not ready yet
                return
            child.state = "up"
            _say(f"{server.name} is back, {now - child.since:.1f}s after it exited")
        elif now >= child.retry_at:
            _say(f"{server.name} not ready after {START_TIMEOUT_SECONDS:.0f}s; killing it")
            server.kill()
            self._died(child, now)


def _say(message: str) -> None:
    print(f"carrack: {message}", file=sys.stderr, flush=True)
