"""/api/jobs/{id}: a job's progress to whoever started it; DELETE cancels it.

Authentication, one audit entry per request and the JSON error shape come from the ledger
door's view base (to be the shared audited endpoint of issue 13). A job someone else started,
in this organization or another, answers exactly as one that does not exist.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from jobs.selectors import job_get
from jobs.services import job_cancel
from ledger.api.views import ERRORS, LedgerAPIView, error_response

from .serializers import JobSerializer

# ASCII digits, at most 18 (a bigint id has 19): anything else is no job, never a 500.
JOB_ID = re.compile(r"[0-9]{1,18}")
ID_PARAMETER = OpenApiParameter("id", int, OpenApiParameter.PATH, description="job id")


class JobView(LedgerAPIView):
    @extend_schema(
        operation_id="job_get", summary="A job's status and progress",
        description="For the user who started the job; anyone else gets 404, as for an unknown id.",
        parameters=[ID_PARAMETER], responses={200: JobSerializer, **ERRORS})
    def get(self, request: Request, id: str) -> Response:
        job = job_get(job_id=int(id), user=request.user) if JOB_ID.fullmatch(id) else None
        self.access.resource = f"Job/{int(id)}" if JOB_ID.fullmatch(id) else None
        if job is None:
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "no such job")
        return Response(JobSerializer(job).data)

    @extend_schema(
        operation_id="job_cancel", summary="Cancel a job",
        description=("For the user who started it: a queued job is cancelled at once, a running "
                     "one stops at its next progress report. Anyone else gets 404."),
        parameters=[ID_PARAMETER], responses={200: JobSerializer, **ERRORS})
    def delete(self, request: Request, id: str) -> Response:
        self.access.interaction = "delete"
        job = job_cancel(job_id=int(id), user=request.user) if JOB_ID.fullmatch(id) else None
        self.access.resource = f"Job/{int(id)}" if JOB_ID.fullmatch(id) else None
        if job is None:
            return error_response(status.HTTP_404_NOT_FOUND, "not_found", "no such job")
        return Response(JobSerializer(job).data)
