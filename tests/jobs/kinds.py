"""Job kinds of the tests, registered on import (here and, with ``--include``, in a worker process).

``tests.count`` counts to ``params["total"]``, one step at a time, checkpointing after each: a
run after a dead worker starts from the checkpoint, and the result says where it started.
"""

from __future__ import annotations

import time

from django.contrib.auth import get_user_model

from jobs.registry import job_kind
from jobs.runner import JobContext
from jobs.services import job_cancel


class WorkerKilled(BaseException):
    """Not an Exception: the runner does not catch it, so the row stays running, lease and all,
    exactly as when the worker process is killed."""


@job_kind("tests.count")
def count(ctx: JobContext) -> dict:
    total = ctx.params["total"]
    start = (ctx.resumed_from or {}).get("step", 0)
    for step in range(start + 1, total + 1):
        time.sleep(ctx.params.get("sleep", 0))
        if step == ctx.params.get("die_at") and ctx.attempt <= ctx.params.get("die_attempts", 1):
            raise WorkerKilled(step)
        if step == ctx.params.get("cancel_at"):
            job_cancel(job_id=ctx.job_id, user=get_user_model().objects.get(pk=ctx.params["user"]))
        ctx.checkpoint({"step": step})
        ctx.progress(step, total)
    return {"counted": total, "started_after": start, "attempt": ctx.attempt}


@job_kind("tests.fails")
def fails(ctx: JobContext) -> None:
    raise ValueError("patient Jane Doe, born 1970-01-01")  # a message that must not reach the row


@job_kind("tests.flaky", retry_on=(ConnectionError,))
def flaky(ctx: JobContext) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("transient")
    return "second time lucky"
