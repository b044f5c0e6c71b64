"""The imaging app's long jobs (``jobs.registry``), registered in ``ImagingConfig.ready()``.

``imaging.deid_sweep`` is beat's sweep of the de-identification outbox: it publishes the copies
whose message never reached the broker, in chunks, reporting progress and checkpointing the
last id published, so a worker that dies mid-sweep leaves a job the next run resumes. One key
for all sweeps: a sweep still running when beat fires again is not doubled.
"""

from __future__ import annotations

from jobs.registry import job_kind
from jobs.runner import JobContext

from . import services

DEID_SWEEP = "imaging.deid_sweep"
DEID_SWEEP_KEY = "outbox"
# Ids published per progress report; the publish itself sends one message per DEIDENTIFY_BATCH.
SWEEP_CHUNK = 200
# The sweep may wait for the broker longer than a request would: it runs on a worker, inside
# its time limit, and answers nobody.
SWEEP_PUBLISH_WAIT = 30.0


@job_kind(DEID_SWEEP, soft_time_limit=60, time_limit=90)
def deid_sweep(ctx: JobContext) -> dict[str, int]:
    """Publish the pending copies after the checkpoint's id; stop at a chunk the broker refuses.

    A copy published twice is made once, so a resumed sweep that republishes a chunk is harmless.
    """
    after = (ctx.resumed_from or {}).get("after_id", 0)
    pending = [pk for pk in services.instances_deidentify_pending() if pk > after]
    published = 0
    ctx.progress(0, len(pending))
    for start in range(0, len(pending), SWEEP_CHUNK):
        chunk = pending[start:start + SWEEP_CHUNK]
        sent = services.deidentify_queue(chunk, wait=SWEEP_PUBLISH_WAIT)
        if not sent:
            break  # the broker is down: the next sweep takes the rest
        published += sent
        ctx.checkpoint({"after_id": chunk[-1]})
        ctx.progress(start + len(chunk), len(pending))
    return {"pending": len(pending), "published": published}
