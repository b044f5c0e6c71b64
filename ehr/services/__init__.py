"""Writes of the ehr app (resources and Bundles), each in one database transaction."""

from .bundles import bundle_process
from .resources import (
    WriteOutcome,
    resource_conditional_update,
    resource_create,
    resource_delete,
    resource_owner_claim,
    resource_patch,
    resource_update,
    resources_create_with_ids,
)

__all__ = [
    "WriteOutcome",
    "bundle_process",
    "resource_conditional_update",
    "resource_create",
    "resource_delete",
    "resource_owner_claim",
    "resource_patch",
    "resource_update",
    "resources_create_with_ids",
]
