"""One refusal type for every door; each door renders it in its own format.

A ``Refusal`` is a request the server declines on purpose (no token, a scope missing, a rule
that says no) with the HTTP status, a short code and a message safe to show the client.
The shared code (authentication, the access rules) raises it; ``/fhir`` answers it as an
OperationOutcome (``ehr.fhir.FhirError`` is one), ``/dicomweb`` as a DICOMweb status
(``imaging.api.http.DicomwebError``), ``/api/`` as a JSON problem. Pure: no Django.
"""

from __future__ import annotations


class Refusal(Exception):
    """A request refused with an HTTP status, a code (a FHIR issue type where there is one),
    a message that quotes nothing the caller sent unless it is safe to, and extra headers."""

    def __init__(self, status: int, code: str, message: str, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
