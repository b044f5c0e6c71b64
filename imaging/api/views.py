"""DICOMweb (PS3.18): STOW-RS stores, QIDO-RS searches, WADO-RS retrieves.

Views parse, call a service or selector, and render; ``dicomweb_endpoint`` authenticates,
audits and turns errors into JSON. Access follows the FHIR rules on ImagingStudy
(``imaging.access``): create for STOW-RS, search for QIDO-RS, read for WADO-RS.
"""

from __future__ import annotations

import functools
import json

from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from access.endpoint import access_context
from access.errors import Refusal
from imaging import dicomjson, pixels, selectors, services
from imaging.access import study_check_row, study_check_type, study_note_consents, study_visible
from imaging.blobs import blob_get
from imaging.models import Study
from imaging.reading import (
    DOES_NOT_MATCH_SOP_CLASS,
    InstanceRefused,
    instance_read,
)

from . import render
from .http import DICOM_JSON, DicomwebError, allow, dicomweb_endpoint
from .multipart import media_type, parse_related, related_body

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
NO_SUCH_STUDY = "No such study"


def base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/dicomweb").rstrip("/")


def dicom_json_response(body, status: int = 200, headers: dict | None = None) -> HttpResponse:
    response = HttpResponse(json.dumps(body, separators=(",", ":")), status=status, content_type=DICOM_JSON)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


# --- routes -------------------------------------------------------------------------------------

@dicomweb_endpoint(get="search-type", post="create")
def studies(request: HttpRequest) -> HttpResponse:
    allow(request, "GET", "HEAD", "POST")
    if request.method == "POST":
        return _stow(request, None)
    return _qido(request, "study")


@dicomweb_endpoint(get="read", post="create")
def study(request: HttpRequest, study_uid: str) -> HttpResponse:
    allow(request, "GET", "HEAD", "POST")
    if request.method == "POST":
        return _stow(request, study_uid)
    return _retrieve(request, study_uid)


@dicomweb_endpoint(get="search-type")
def series_search(request: HttpRequest, study_uid: str | None = None) -> HttpResponse:
    allow(request, "GET", "HEAD")
    return _qido(request, "series", study_uid=study_uid)


@dicomweb_endpoint(get="search-type")
def instances_search(request: HttpRequest, study_uid: str | None = None,
                     series_uid: str | None = None) -> HttpResponse:
    allow(request, "GET", "HEAD")
    return _qido(request, "instance", study_uid=study_uid, series_uid=series_uid)


@dicomweb_endpoint(get="read")
def retrieve(request: HttpRequest, study_uid: str, series_uid: str | None = None,
             sop_uid: str | None = None) -> HttpResponse:
    allow(request, "GET", "HEAD")
    return _retrieve(request, study_uid, series_uid, sop_uid)


@dicomweb_endpoint(get="read")
def metadata(request: HttpRequest, study_uid: str, series_uid: str | None = None,
             sop_uid: str | None = None) -> HttpResponse:
    allow(request, "GET", "HEAD")
    _, instances = _readable(request, study_uid, series_uid, sop_uid)
    return dicom_json_response([dicomjson.file_json(blob_get(key=row.storage_key)) for row in instances])


@dicomweb_endpoint(get="read")
def frames(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str, frame_list: str) -> HttpResponse:
    allow(request, "GET", "HEAD")
    numbers = _frame_numbers(frame_list)
    _, instances = _readable(request, study_uid, series_uid, sop_uid)
    instance = instances[0]
    data = blob_get(key=instance.storage_key)
    compressed = pixels.COMPRESSED_MEDIA_TYPES.get(instance.transfer_syntax_uid)
    wanted = _accepted(request)
    if compressed and any(kind in (compressed, f"multipart/related;{compressed}") for kind in wanted):
        parts = _frames(pixels.frames_as_stored, data, numbers)
        part_type = f"{compressed}; transfer-syntax={instance.transfer_syntax_uid}"
        body, content_type = related_body(((part_type, part) for part in parts), compressed)
    else:
        _require(wanted, "application/octet-stream")
        parts = _frames(functools.partial(pixels.frames_decoded,
                                          max_instance_bytes=settings.DICOM_MAX_PIXEL_BYTES_PER_INSTANCE,
                                          max_bytes=settings.DICOM_MAX_PIXEL_BYTES_PER_REQUEST), data, numbers)
        part_type = f"application/octet-stream; transfer-syntax={EXPLICIT_LITTLE}"
        body, content_type = related_body(((part_type, part) for part in parts), "application/octet-stream")
    return HttpResponse(b"".join(body), content_type=content_type)


@dicomweb_endpoint(get="read")
def rendered(request: HttpRequest, study_uid: str, series_uid: str, sop_uid: str,
             frame_list: str = "1") -> HttpResponse:
    allow(request, "GET", "HEAD")
    numbers = _frame_numbers(frame_list)
    if len(numbers) != 1:
        raise DicomwebError(400, "Rendered frames are returned one at a time")
    wanted = _accepted(request)
    kind = next((k for k in wanted if k in pixels.RENDERED_TYPES), None)
    if kind is None:
        _require(wanted, "image/jpeg")
        kind = "image/jpeg"
    _, instances = _readable(request, study_uid, series_uid, sop_uid)
    quality = _integer(request.GET.get("quality", "90"), "quality", 1, 100)
    try:
        image = pixels.render(blob_get(key=instances[0].storage_key), numbers[0], kind, quality=quality,
                              max_instance_bytes=settings.DICOM_MAX_PIXEL_BYTES_PER_INSTANCE)
    except pixels.FrameError as error:
        raise _frame_error(error) from None
    return HttpResponse(image, content_type=kind)


@dicomweb_endpoint(get="read")
def unknown(request: HttpRequest, path: str) -> HttpResponse:
    raise DicomwebError(404, "No such DICOMweb resource")


# --- STOW-RS ------------------------------------------------------------------------------------

def _stow(request: HttpRequest, study_uid: str | None) -> HttpResponse:
    ctx = access_context(request)
    study_check_type(ctx, "create")
    if not ctx.organization_id:
        raise DicomwebError(403, "This account has no organization to own the studies it stores")
    content_type = request.META.get("CONTENT_TYPE", "")
    declared = media_type(content_type)[1].get("type", "application/dicom").lower()
    if declared != "application/dicom":
        raise DicomwebError(415, f'Only type="application/dicom" parts are accepted, not "{declared}"')
    outcomes = _store_parts(parse_related(request.body, content_type), study_uid, ctx.organization_id)
    if not outcomes:
        raise DicomwebError(400, "The request holds no DICOM instance")
    base = base_url(request)
    referenced, failed, touched = render.stow_items(outcomes, base)
    _audit_target(request, touched)
    status = 200 if not failed else 409 if not referenced else 202
    retrieve_url = f"{base}/studies/{study_uid}" if study_uid else None
    return dicom_json_response(
        dicomjson.store_response(retrieve_url=retrieve_url, referenced=referenced, failed=failed), status)


def _store_parts(parts, study_uid: str | None, organization_id: str) -> list:
    """Read every part, then store the readable ones together; outcomes or refusals in order."""
    read: list = []
    for count, (headers, data) in enumerate(parts, 1):
        if count > settings.DICOMWEB_MAX_INSTANCES_PER_REQUEST:
            raise DicomwebError(413, f"At most {settings.DICOMWEB_MAX_INSTANCES_PER_REQUEST} instances per request")
        part_type = media_type(headers.get("content-type", "application/dicom"))[0]
        if part_type != "application/dicom":
            raise DicomwebError(415, f"Unsupported part media type '{part_type}'")
        try:
            incoming = instance_read(data)
            if study_uid and incoming.study_instance_uid != study_uid:
                raise InstanceRefused(DOES_NOT_MATCH_SOP_CLASS, "The instance is not in the study of the URL",
                                      sop_class_uid=incoming.sop_class_uid,
                                      sop_instance_uid=incoming.sop_instance_uid)
            read.append(incoming)
        except InstanceRefused as error:
            read.append(error)
    accepted = [item for item in read if not isinstance(item, InstanceRefused)]
    _check_request_pixels(accepted)
    stored = iter(services.instances_store(incoming=accepted, organization_id=organization_id, sync_fhir=True)
                  if accepted else [])
    return [item if isinstance(item, InstanceRefused) else next(stored) for item in read]


def _check_request_pixels(accepted: list) -> None:
    """413 for a request whose instances declare more decoded pixels than a request may.

    Instances above the per-instance limit are not counted: they are refused (0xA700) anyway.
    """
    limit = settings.DICOM_MAX_PIXEL_BYTES_PER_INSTANCE
    total = sum(size for size in (item.pixel_bytes() for item in accepted) if size <= limit)
    if total > settings.DICOM_MAX_PIXEL_BYTES_PER_REQUEST:
        raise DicomwebError(413, "The instances of this request declare more pixel data than a request may hold")


def _audit_target(request: HttpRequest, studies_seen: list) -> None:
    if studies_seen:
        request.access.resource = f"ImagingStudy/{studies_seen[0].fhir_id}"
        patients = {row.patient_id for row in studies_seen}
        request.access.patient_id = patients.pop() if len(patients) == 1 else None


# --- QIDO-RS ------------------------------------------------------------------------------------

def _qido(request: HttpRequest, level: str, *, study_uid: str | None = None,
          series_uid: str | None = None) -> HttpResponse:
    ctx = access_context(request)
    study_check_type(ctx, "search")
    matches, includes, limit, offset = _qido_params(request)
    visible = study_visible(ctx, "search")
    base = base_url(request)
    try:
        if level == "study":
            page = selectors.studies_search(visible=visible, matches=matches, limit=limit, offset=offset)
            firsts = _firsts(includes, study_ids=[row.pk for row in page.rows])
            body = [render.study_json(row, base, includes, firsts.get(row.pk)) for row in page.rows]
        elif level == "series":
            page = selectors.series_search(visible=visible, matches=matches, limit=limit, offset=offset,
                                           study_uid=study_uid)
            firsts = _firsts(includes, series_ids=[row.pk for row in page.rows])
            body = [render.series_json(row, base, includes, firsts.get(row.pk)) for row in page.rows]
        else:
            page = selectors.instances_search(visible=visible, matches=matches, limit=limit, offset=offset,
                                              study_uid=study_uid, series_uid=series_uid)
            body = [render.instance_json(row, base, includes) for row in page.rows]
    except selectors.QueryError as error:
        raise DicomwebError(400, str(error)) from None
    shown = [row if isinstance(row, Study) else row.study for row in page.rows]
    study_note_consents(ctx, shown)
    patients = {row.patient_id for row in shown}
    request.access.patient_id = patients.pop() if len(patients) == 1 else None
    headers = {}
    if page.ignored:
        headers["Warning"] = f'299 carrack "The following attributes were ignored: {", ".join(page.ignored)}"'
    return dicom_json_response(body, headers=headers)


def _firsts(includes, **ids) -> dict[int, dict]:
    if not includes or not next(iter(ids.values())):
        return {}
    return selectors.first_instance_attributes(**ids)


def _qido_params(request: HttpRequest) -> tuple[dict[str, str], set[str] | str, int, int]:
    matches: dict[str, str] = {}
    includes: set[str] | str = set()
    for name in request.GET:
        values = request.GET.getlist(name)
        if any("\x00" in value for value in [name, *values]):  # PostgreSQL text cannot hold NUL
            raise DicomwebError(400, f"The query parameter {name!r} contains a NUL character")
        if name == "includefield":
            for value in ",".join(values).split(","):
                includes = _include(includes, value.strip())
        elif name in ("limit", "offset", "fuzzymatching"):
            continue
        else:
            tag = dicomjson.tag_of(name.split(".")[0])
            if tag is None:
                raise DicomwebError(400, f"Unknown attribute '{name}'")
            matches[tag if "." not in name else name] = values[-1]
    limit = _integer(request.GET.get("limit", str(selectors.DEFAULT_LIMIT)), "limit", 1, selectors.MAX_LIMIT)
    offset = _integer(request.GET.get("offset", "0"), "offset", 0, 2**31 - 1)
    return matches, includes, limit, offset


def _include(includes: set[str] | str, value: str) -> set[str] | str:
    if includes == render.ALL or value == "all":
        return render.ALL
    if not value:
        return includes
    tag = dicomjson.tag_of(value)
    if tag is None:
        raise DicomwebError(400, f"Unknown includefield '{value}'")
    return {*includes, tag}


def _integer(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DicomwebError(400, f"{name} must be an integer") from None
    if not low <= number <= high:
        raise DicomwebError(400, f"{name} must be between {low} and {high}")
    return number


# --- WADO-RS ------------------------------------------------------------------------------------

def _readable(request: HttpRequest, study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None) -> tuple:
    """The study (checked against the caller's access) and the instances the URL names.

    A study the caller may not see answers exactly as one that does not exist (404): a 403
    would tell another hospital which UIDs are stored here. Its audit entry still names it.
    UIDs are per organization, so the URL may name several copies of a study: the answer
    comes from one of them, the first the caller may see that holds what the URL names, in
    the order of ``selectors.studies_by_uid`` (the caller's own copy, then the oldest).
    Copies are never mixed in one answer: a SOP Instance UID comes back once.
    """
    ctx = access_context(request)
    study_check_type(ctx, "read")
    rows = selectors.studies_by_uid(study_uid=study_uid, organization_id=ctx.organization_id)
    if not rows:
        raise DicomwebError(404, NO_SUCH_STUDY)
    _audit_read(request, rows[0])  # a refused read names the study it was refused
    seen = False
    for row in rows:
        instances = list(selectors.instances_of(study=row, series_uid=series_uid, sop_uid=sop_uid))
        if (instances or not seen) and _may_read(ctx, row):
            _audit_read(request, row)
            if instances:
                return row, instances
            seen = True
    raise DicomwebError(404, "No such series or instance in this study" if seen else NO_SUCH_STUDY)


def _may_read(ctx, row: Study) -> bool:
    """Whether the caller may read this study; a refusal (403) is only ever told as a 404."""
    try:
        study_check_row(ctx, row, "read")
    except Refusal as error:
        if error.status != 403:
            raise
        return False
    return True


def _audit_read(request: HttpRequest, row: Study) -> None:
    request.access.resource = f"ImagingStudy/{row.fhir_id}"
    request.access.patient_id = row.patient_id


def _retrieve(request: HttpRequest, study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None) -> HttpResponse:
    _require(_accepted(request), "application/dicom")
    _, instances = _readable(request, study_uid, series_uid, sop_uid)
    parts = ((f"application/dicom; transfer-syntax={row.transfer_syntax_uid}", row.storage_key)
             for row in instances)
    body, content_type = related_body(((kind, _Lazy(key)) for kind, key in parts), "application/dicom")
    return StreamingHttpResponse((bytes(chunk) for chunk in body), content_type=content_type)


class _Lazy:
    """A stored file read only when the streamed response reaches it."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __bytes__(self) -> bytes:
        return blob_get(key=self.key)


def _accepted(request: HttpRequest) -> list[str]:
    """Accepted media types, multipart ones as ``multipart/related;<type>``; [] = anything."""
    kinds = []
    for item in request.headers.get("Accept", "").split(","):
        main, params = media_type(item.strip())
        if not main:
            continue
        if main == "multipart/related":
            main = f"multipart/related;{params.get('type', 'application/octet-stream').lower()}"
        kinds.append(main)
    return kinds


def _require(wanted: list[str], kind: str) -> None:
    acceptable = {kind, f"multipart/related;{kind}", "*/*", "multipart/related;*/*", "multipart/related"}
    if wanted and not acceptable.intersection(wanted):
        raise DicomwebError(406, f"This resource is available as {kind} only")


def _frame_numbers(frame_list: str) -> list[int]:
    try:
        numbers = [int(part) for part in frame_list.split(",") if part.strip()]
    except ValueError:
        raise DicomwebError(400, "Frame numbers must be integers separated by commas") from None
    if not numbers:
        raise DicomwebError(400, "No frame number given")
    if len(set(numbers)) != len(numbers):  # each repeat would be copied (or decoded) again
        raise DicomwebError(400, "A frame number is repeated")
    return numbers


def _frames(read, data: bytes, numbers: list[int]) -> list[bytes]:
    try:
        return read(data, numbers)
    except pixels.FrameError as error:
        raise _frame_error(error) from None


def _frame_error(error: "pixels.FrameError") -> DicomwebError:
    """404 for a frame outside the instance, 413 for pixels above the limits, else 406."""
    if isinstance(error, pixels.FrameTooLarge):
        return DicomwebError(413, str(error))
    return DicomwebError(404 if "outside" in str(error) else 406, str(error))
