"""``POST /fhir/{type}/$validate`` and ``/fhir/{type}/{id}/$validate``: would this write be accepted?

The body is the resource, or a ``Parameters`` with ``resource`` (and ``mode``); ``mode`` is
``create``, ``update`` or ``delete`` (none: validate the resource as a create would). The
caller is authorized as for the write it asks about (its type-level scopes and role; the
stored resource for ``/{id}`` as an update or delete of it would be), the resource is
checked by the same validation every write runs (``ehr.fhir.parse_resource``: the R4B model
and the required bindings), and the answer is ``200`` with an ``OperationOutcome`` listing
every issue found, or one ``information`` issue when there is none. Nothing is written;
the request is audited as an ``operation``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from ehr import fhirjson, rules
from ehr.fhir import FhirError, issue, json_error, operation_outcome, parse_resource, require_resource_type

from . import params
from .http import access_context, fhir_endpoint, fhir_response

MODES = ("create", "update", "delete")


@csrf_exempt
@fhir_endpoint("validate")
def validate(request: HttpRequest, resource_type: str, logical_id: str | None = None) -> HttpResponse:
    params.allow(request, "POST")
    require_resource_type(resource_type)
    resource, mode = _request_body(request)
    if mode == "delete" and logical_id is None:
        raise FhirError(400, "invalid", "mode=delete validates the delete of one resource: POST to Type/id/$validate")
    ctx = access_context(request)
    stored = rules.authorize(ctx, mode or "create", resource_type,
                             logical_id if mode in ("update", "delete") else None)
    if mode == "delete" and stored is None:
        raise FhirError(404, "not-found", f"{resource_type}/{logical_id} is not known")
    issues = [] if mode == "delete" else _resource_issues(resource, resource_type, logical_id, mode)
    if not issues:
        issues = [issue("information", "informational", f"No issues found ({mode or 'create'} of {resource_type})")]
    return fhir_response(operation_outcome(issues))


def _request_body(request: HttpRequest) -> tuple[dict | None, str | None]:
    """The resource and the mode, from a Parameters or a bare resource (mode then from the query)."""
    text = params.body_text(request)
    try:
        body = fhirjson.loads(text) if text.strip() else None
    except fhirjson.FhirJsonError as error:
        raise json_error(error) from None
    mode = request.GET.get("mode")
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        body, mode = _from_parameters(body, mode)
    if mode is not None and mode not in MODES:
        raise FhirError(400, "invalid", f"mode must be one of {', '.join(MODES)}")
    if body is not None and not isinstance(body, dict):
        raise FhirError(400, "structure", "The body must be a resource or a Parameters")
    return body, mode


def _from_parameters(parameters: dict, mode: str | None) -> tuple[dict | None, str | None]:
    resource = None
    for parameter in parameters.get("parameter") or []:
        if not isinstance(parameter, dict):
            continue
        if parameter.get("name") == "resource":
            resource = parameter.get("resource")
        elif parameter.get("name") == "mode":
            mode = parameter.get("valueCode", parameter.get("valueString"))
    return resource, mode


def _resource_issues(resource: dict | None, resource_type: str, logical_id: str | None,
                     mode: str | None) -> list[dict]:
    if resource is None:
        raise FhirError(400, "required", f"mode={mode or 'create'} needs the resource to validate")
    issues = []
    try:
        parse_resource(fhirjson.dumps(resource), expected_type=resource_type)
    except FhirError as error:
        issues += error.issues or [issue("error", error.code, error.diagnostics)]
    if mode == "update" and (resource.get("id") is None or (logical_id and resource.get("id") != logical_id)):
        wanted = f"equal '{logical_id}'" if logical_id else "be present"
        issues.append(issue("error", "invalid", f"An update's resource id must {wanted}", f"{resource_type}.id"))
    return issues
