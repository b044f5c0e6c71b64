"""Routes under /dicomweb/ (PS3.18): studies, series and instances for STOW, QIDO and WADO."""

from django.urls import re_path

from . import views

UID = r"[0-9]+(?:\.[0-9]+)*"
STUDY = rf"studies/(?P<study_uid>{UID})"
SERIES = rf"{STUDY}/series/(?P<series_uid>{UID})"
INSTANCE = rf"{SERIES}/instances/(?P<sop_uid>{UID})"
FRAMES = rf"{INSTANCE}/frames/(?P<frame_list>[0-9,]+)"

urlpatterns = [
    re_path(r"^studies/?$", views.studies, name="dicomweb-studies"),
    re_path(r"^series/?$", views.series_search),
    re_path(r"^instances/?$", views.instances_search),
    re_path(rf"^{STUDY}/?$", views.study, name="dicomweb-study"),
    re_path(rf"^{STUDY}/metadata$", views.metadata),
    re_path(rf"^{STUDY}/series/?$", views.series_search),
    re_path(rf"^{STUDY}/instances/?$", views.instances_search),
    re_path(rf"^{SERIES}/?$", views.retrieve),
    re_path(rf"^{SERIES}/metadata$", views.metadata),
    re_path(rf"^{SERIES}/instances/?$", views.instances_search),
    re_path(rf"^{INSTANCE}/?$", views.retrieve, name="dicomweb-instance"),
    re_path(rf"^{INSTANCE}/metadata$", views.metadata),
    re_path(rf"^{INSTANCE}/rendered$", views.rendered),
    re_path(rf"^{FRAMES}/?$", views.frames),
    re_path(rf"^{FRAMES}/rendered$", views.rendered),
    re_path(r"^(?P<path>.*)$", views.unknown),
]
