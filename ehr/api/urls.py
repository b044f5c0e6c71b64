"""Routes under /fhir/: the FHIR RESTful API (R4)."""

from django.urls import path, re_path

from ehr import fhir

from . import auditevents, validate, views

TYPE = rf"(?P<resource_type>{fhir.TYPE})"
ID = rf"(?P<logical_id>{fhir.ID})"

urlpatterns = [
    path("metadata", views.metadata, name="fhir-metadata"),
    path("", views.system, name="fhir-base"),
    path("_search", views.system_search),
    path("_history", views.history),
    re_path(rf"^Patient/{ID}/\$everything$", views.everything, name="fhir-everything"),
    re_path(r"^(?P<resource_type>AuditEvent)/?$", auditevents.search, name="fhir-auditevent"),
    re_path(rf"^(?P<resource_type>AuditEvent)/{ID}$", auditevents.read),
    re_path(rf"^{TYPE}/\$validate$", validate.validate, name="fhir-validate"),
    re_path(rf"^{TYPE}/{ID}/\$validate$", validate.validate, name="fhir-validate-instance"),
    re_path(rf"^{TYPE}/?$", views.type_root, name="fhir-type"),
    re_path(rf"^{TYPE}/_search$", views.type_search),
    re_path(rf"^{TYPE}/_history$", views.history),
    re_path(rf"^{TYPE}/{ID}$", views.instance, name="fhir-instance"),
    re_path(rf"^{TYPE}/{ID}/_history$", views.history),
    re_path(rf"^{TYPE}/{ID}/_history/(?P<version_id>[^/]+)$", views.vread),
    re_path(r"^(?P<path>.*)$", views.unknown),
]
