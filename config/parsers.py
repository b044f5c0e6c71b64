"""The JSON parser of every DRF view under ``/api/``, held to the FHIR reader's bounds.

DRF's own ``JSONParser`` recurses once per nesting level (a 100k-deep body kills the worker
once web3 has raised the recursion limit) and accepts NaN and Infinity; this one checks the
body with ``ehr.fhirjson.check_bounds`` first, without recursion, and refuses both.
"""

from __future__ import annotations

import json

from rest_framework import exceptions, parsers, status

from ehr import fhirjson


class JsonTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The JSON body has too many values"
    default_code = "too_large"


class BoundedJSONParser(parsers.JSONParser):
    """``application/json`` with bounded depth and size; errors are 400 (or 413), never a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            fhirjson.check_bounds(raw)
            return json.loads(raw, parse_constant=_refused)
        except fhirjson.FhirJsonLimitError as error:
            if error.too_large:
                raise JsonTooLarge(str(error)) from None
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            raise exceptions.ParseError(f"JSON parse error - {type(error).__name__}") from None


def _refused(name: str):
    raise ValueError(f"{name} is not JSON")
