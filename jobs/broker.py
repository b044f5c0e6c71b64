"""Publishing to the broker without waiting on it longer than ``wait`` seconds.

A paused Redis accepts the connection and never answers; kombu would block until its socket
timeout. The publish runs on a thread of its own and is waited for ``wait`` seconds at most;
after a failure the broker is skipped for ``BROKER_PUBLISH_BACKOFF_SECONDS`` and one warning
is logged per outage. Every user keeps its own outbox row committed before it publishes (a
Job, an Instance awaiting its de-identified copy), so a message not sent is only late: a sweep
sends it. Eager mode (tests) runs the task where it is published.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

logger = logging.getLogger(__name__)


class BoundedPublisher:
    """One per kind of message; ``what`` names what waits for the sweep in the user's log lines."""

    def __init__(self, what: str, thread_name: str, log: logging.Logger = logger) -> None:
        self._what, self._thread_name, self._log = what, thread_name, log
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget the backoff and the thread (after a fork, or when a test changes brokers)."""
        self._pid, self._pool = 0, None
        self._closed_until, self._down = 0.0, False

    def send(self, publish: Callable[[], None], *, wait: float, eager: bool) -> bool:
        """``publish()`` within ``wait`` seconds; False if it failed, timed out or was skipped."""
        if not eager and time.monotonic() < self._closed_until:
            return False
        try:
            if eager:
                publish()
            else:
                future = self._executor().submit(publish)
                try:
                    future.result(timeout=wait)
                finally:
                    future.cancel()
        except Exception as error:  # noqa: BLE001 - the row is committed; the sweep sends it
            self._failed(error)
            return False
        self._succeeded()
        return True

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pid != os.getpid() or self._pool is None:
                self._pid = os.getpid()
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self._thread_name)
            return self._pool

    def _failed(self, error: BaseException) -> None:
        backoff = settings.BROKER_PUBLISH_BACKOFF_SECONDS
        with self._lock:
            self._closed_until = time.monotonic() + backoff
            first, self._down = not self._down, True
        if first:
            self._log.warning("broker unreachable (%s): %s left to the sweep, publishing paused "
                              "for %gs at a time until it answers", type(error).__name__, self._what, backoff)

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            self._log.info("broker reachable again: %s published at once", self._what)


PUBLISHER = BoundedPublisher("jobs", "jobs-publish")
os.register_at_fork(after_in_child=PUBLISHER.reset)
