"""Writes of the imaging app, each in one transaction.

``instances_store`` (``instance_store`` for one) is the one way an instance gets in: DIMSE
C-STORE and STOW-RS both call it. ``study_sync_fhir`` keeps each study's ImagingStudy in step;
``dimse_store_audit`` audits a C-STORE; ``instance_deidentify`` makes the de-identified copy.
"""

from .audit import dimse_store_audit
from .deid import DeidentificationUnavailable, deidentify_queue, instance_deidentify, instances_deidentify_pending
from .fhir import _ENDPOINTS_SEEN as _ENDPOINTS_SEEN  # noqa: F401 - tests reset it
from .fhir import study_sync_fhir, study_sync_stale
from .store import ALREADY_STORED, CONFLICT, STORED, StoreOutcome, instance_store, instances_store

__all__ = [
    "ALREADY_STORED",
    "CONFLICT",
    "STORED",
    "DeidentificationUnavailable",
    "StoreOutcome",
    "deidentify_queue",
    "dimse_store_audit",
    "instance_deidentify",
    "instance_store",
    "instances_deidentify_pending",
    "instances_store",
    "study_sync_fhir",
    "study_sync_stale",
]
