"""FHIR REST interactions. Views parse the request, call one service or selector, and render."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse, QueryDict
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from access import policy
from ehr import envelope, rules, selectors, services
from ehr.fhir import FhirError
from ehr.models import Resource
from ehr.search import SearchError, parse_search, run_search, searchset_bundle

from . import bundles, params
from .capability import capability_statement
from .http import (
    access_context,
    base_url,
    bundle_response,
    fhir_endpoint,
    fhir_response,
    prefer,
    requested_fhir_version,
    resource_headers,
    written_response,
)


@csrf_exempt
@fhir_endpoint("metadata")
def metadata(request: HttpRequest) -> HttpResponse:
    params.allow(request, "GET")
    version = requested_fhir_version(request)
    statement = capability_statement(base_url(request), fhir_version=version)
    return fhir_response(statement, fhir_version=statement["fhirVersion"])


@csrf_exempt
@fhir_endpoint("system")
def system(request: HttpRequest) -> HttpResponse:
    """The base URL: POST a batch/transaction Bundle, GET a search over all types."""
    params.allow(request, "GET", "POST")
    if request.method == "POST":
        ctx = access_context(request)
        wants_resources = prefer(request, "return") == "representation"
        request.access.interaction, body = services.bundle_process(
            text=params.body_text(request), handle_get=_get_handler(request),
            return_resources=wants_resources,
            organization_id=ctx.organization_id, authorize=_entry_authorizer(ctx),
            visible=rules.visible(ctx, "update"), written=request.access.written,
        )
        return bundle_response(body)
    return _search(request, None, params.query_params(request))


@csrf_exempt
@fhir_endpoint("system-search")
def system_search(request: HttpRequest) -> HttpResponse:
    params.allow(request, "POST")
    return _search(request, None, params.post_params(request))


@csrf_exempt
@fhir_endpoint("history")
def history(request: HttpRequest, resource_type: str | None = None, logical_id: str | None = None):
    params.allow(request, "GET")
    ctx = access_context(request)
    stored = None
    if resource_type:
        stored = rules.authorize(ctx, "history", resource_type, logical_id)
    else:
        rules.check_role(ctx, "history")
    asked = params.query_params(request)
    offset, count = params.paging(request, default=selectors.HISTORY_DEFAULT_COUNT)
    # An emergency opens the history of one resource of one patient, never a type's or the server's.
    emergency_patient = stored.patient_id if stored is not None and logical_id else None
    page = selectors.history(resource_type=resource_type, logical_id=logical_id,
                             since=params.since(request), offset=offset, count=count,
                             visible=rules.visible(ctx, "history", emergency_patient=emergency_patient))
    _name_patients(request, {version.patient_id for version in page.versions})
    base = base_url(request)
    self_url = base + "/" + "/".join(p for p in (resource_type, logical_id, "_history") if p)
    links = envelope.paging_links(self_url, asked, offset=offset, count=page.count,
                                  has_next=offset + page.count < page.total)
    return bundle_response(bundles.history_bundle(page.versions, base_url=base, total=page.total, links=links))


@csrf_exempt
@fhir_endpoint("type")
def type_root(request: HttpRequest, resource_type: str) -> HttpResponse:
    """GET searches, POST creates (If-None-Exist: conditional), PUT with criteria updates."""
    params.allow(request, "GET", "POST", "PUT")
    if request.method == "POST":
        ctx = access_context(request)
        rules.authorize(ctx, "create", resource_type)
        outcome = services.resource_create(resource_type=resource_type, text=params.body_text(request),
                                           if_none_exist=request.headers.get("If-None-Exist"),
                                           organization_id=ctx.organization_id,
                                           visible=rules.visible(ctx, "create"))
        rules.check_written(ctx, outcome.resource)
        return written_response(request, outcome.resource, outcome.status, base_url(request))
    if request.method == "PUT":
        ctx = access_context(request)
        query = request.META.get("QUERY_STRING", "")
        rules.authorize(ctx, "update", resource_type)
        outcome = services.resource_conditional_update(
            resource_type=resource_type, query=query, text=params.body_text(request),
            organization_id=ctx.organization_id,
            visible=rules.visible(ctx, "update"),
        )
        rules.check_written(ctx, outcome.resource)
        return written_response(request, outcome.resource, outcome.status, base_url(request))
    return _search(request, resource_type, params.query_params(request))


@csrf_exempt
@fhir_endpoint("type-search")
def type_search(request: HttpRequest, resource_type: str) -> HttpResponse:
    params.allow(request, "POST")
    return _search(request, resource_type, params.post_params(request))


@csrf_exempt
@fhir_endpoint("instance")
def instance(request: HttpRequest, resource_type: str, logical_id: str) -> HttpResponse:
    params.allow(request, "GET", "HEAD", "PUT", "PATCH", "DELETE")
    base = base_url(request)
    ctx = access_context(request)
    interaction = {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(request.method, "read")
    stored = rules.authorize(ctx, interaction, resource_type, logical_id)
    if request.method == "PUT":
        outcome = services.resource_update(resource_type=resource_type, logical_id=logical_id,
                                           text=params.body_text(request),
                                           if_match=request.headers.get("If-Match"),
                                           organization_id=ctx.organization_id)
        rules.check_written(ctx, outcome.resource)
        return written_response(request, outcome.resource, outcome.status, base)
    if request.method == "PATCH":
        if request.content_type != "application/json-patch+json":
            raise FhirError(415, "not-supported", "PATCH accepts application/json-patch+json")
        outcome = services.resource_patch(resource_type=resource_type, logical_id=logical_id,
                                          patch_text=params.body_text(request),
                                          if_match=request.headers.get("If-Match"))
        rules.check_written(ctx, outcome.resource)
        return written_response(request, outcome.resource, outcome.status, base)
    if request.method == "DELETE":
        services.resource_delete(resource_type=resource_type, logical_id=logical_id)
        return fhir_response(None, 204)
    row = selectors.resource_present(stored, resource_type=resource_type, logical_id=logical_id)
    request.access.patient_id = row.patient_id
    if request.headers.get("If-None-Match") == f'W/"{row.version_id}"':
        return fhir_response(None, 304, headers=resource_headers(row, base))
    return fhir_response(row.text, headers=resource_headers(row, base))


@csrf_exempt
@fhir_endpoint("vread")
def vread(request: HttpRequest, resource_type: str, logical_id: str, version_id: str) -> HttpResponse:
    params.allow(request, "GET", "HEAD")
    ctx = access_context(request)
    rules.authorize(ctx, "vread", resource_type, logical_id)
    version = selectors.resource_vread(resource_type=resource_type, logical_id=logical_id,
                                       version_id=version_id)
    rules.check_row(ctx, version)  # an old version may belong to another patient's compartment
    request.access.patient_id = version.patient_id
    return fhir_response(version.text, headers=resource_headers(version, base_url(request)))


@csrf_exempt
@fhir_endpoint("everything")
def everything(request: HttpRequest, logical_id: str) -> HttpResponse:
    params.allow(request, "GET")
    ctx = access_context(request)
    rules.authorize(ctx, "everything", "Patient", logical_id)
    offset, count = params.paging(request, default=selectors.HISTORY_DEFAULT_COUNT)
    resources, total = selectors.patient_everything(
        logical_id=logical_id, offset=offset, count=count,
        visible=rules.visible(ctx, "everything", emergency_patient=logical_id))
    base = base_url(request)
    links = envelope.paging_links(f"{base}/Patient/{logical_id}/$everything", params.query_params(request),
                                  offset=offset, count=count, has_next=offset + count < total)
    return bundle_response(bundles.searchset(resources, base_url=base, total=total, links=links))


@csrf_exempt
@fhir_endpoint("unknown")
def unknown(request: HttpRequest, path: str = "") -> HttpResponse:
    raise FhirError(404, "not-found", f"No FHIR endpoint at /fhir/{path[:100]}")


def _search(request: HttpRequest, resource_type: str | None, asked: list[tuple[str, str]]) -> HttpResponse:
    ctx = access_context(request)
    if resource_type:
        rules.check_type(ctx, resource_type, "search")
    else:
        rules.check_role(ctx, "search")
    strict = prefer(request, "handling") == "strict"
    emergency_patient = request.access.named_patient
    if ctx.break_glass and emergency_patient is None:
        raise FhirError(403, "forbidden", "Breaking the glass opens one patient's record: search within one "
                                          "patient (patient=, subject= or Patient?_id=)")
    try:
        query = parse_search(resource_type, asked, strict=strict)
        result = run_search(query, visible=rules.visible(ctx, "search", emergency_patient=emergency_patient))
    except SearchError as error:
        raise FhirError(400, error.code, error.message) from None
    patients = {row.patient_id for row in [*result.matches, *result.included] if row.patient_id}
    policy.note_consents(ctx, patients)
    _name_patients(request, patients)
    body = searchset_bundle(result, base_url=base_url(request), resource_type=resource_type, query=query)
    return bundle_response(body)


def _name_patients(request: HttpRequest, patients: set[str | None]) -> None:
    """The audit names every patient a read returned: one patient as the entry's own, several
    each in an entry of their own (``AuditEvent?patient=`` shows each of them the read)."""
    patients = {p for p in patients if p}
    if len(patients) == 1:  # the usual case: a read within one patient's record
        request.access.patient_id = next(iter(patients))
    else:
        request.access.read_patients = patients


def _get_handler(request: HttpRequest):
    """Answer a Bundle entry's GET by routing it through these same views, as the same user."""

    def handle(url: str) -> tuple[int, str]:
        parts = urlsplit(url)
        path = "/fhir/" + parts.path.lstrip("/")
        try:
            match = resolve(path)
        except Resolver404:
            return 404, ""
        inner = HttpRequest()
        inner.method, inner.path, inner.path_info = "GET", path, path
        inner.META = {**request.META, "REQUEST_METHOD": "GET", "QUERY_STRING": parts.query,
                      "CONTENT_LENGTH": "0", "PATH_INFO": path}
        inner.GET = QueryDict(parts.query)
        inner.user = request.user
        inner.smart_scopes = getattr(request, "smart_scopes", None)
        response = match.func(inner, *match.args, **match.kwargs)
        return response.status_code, response.content.decode()

    return handle


def _entry_authorizer(ctx: policy.AccessContext):
    """Each write entry of a Bundle is authorized like the same request made alone."""

    def authorize(interaction: str, resource_type: str, target: str | None, row: Resource | None) -> None:
        if row is not None and interaction in ("create", "update"):
            rules.check_written(ctx, row)
        elif row is not None:
            rules.check_row(ctx, row, write=interaction in policy.WRITES)
        elif target and target.startswith("?"):
            rules.authorize(ctx, interaction, resource_type)
        else:
            rules.authorize(ctx, interaction, resource_type, target)

    return authorize
