"""Object storage for DICOM files: Django's ``STORAGES["dicom"]`` (filesystem or S3-compatible).

Keys are made of UIDs only (digits and dots, checked by ``imaging.reading``), so they are
safe as paths and as object names. A key is written at most once per stored instance; a
file left by a rolled-back transaction is simply overwritten by the next store of that UID.
"""

from __future__ import annotations

import os

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages


def dicom_storage():
    return storages["dicom"]


def instance_key(study_uid: str, sop_uid: str, *, suffix: str = "") -> str:
    """One folder per study (a new folder costs more than the file written into it)."""
    return f"{study_uid}/{sop_uid}{suffix}.dcm"


def blob_put(*, key: str, data: bytes) -> None:
    """Write (or overwrite) one object; the storage must be configured to overwrite."""
    storage = dicom_storage()
    if type(storage) is FileSystemStorage:  # the common case, without Storage.save's generic steps
        _file_put(storage, key, data)
        return
    saved = storage.save(key, ContentFile(data))
    if saved != key:  # a storage that renames instead of overwriting would lose the link
        dicom_storage().delete(saved)
        raise RuntimeError("the DICOM storage must overwrite objects (allow_overwrite / file_overwrite)")


def _file_put(storage: FileSystemStorage, key: str, data: bytes) -> None:
    path = storage.path(key)  # refuses a key that would leave the storage folder
    flags, mode = os.O_WRONLY | os.O_CREAT | os.O_TRUNC, storage.file_permissions_mode or 0o640
    try:
        descriptor = os.open(path, flags, mode)
    except FileNotFoundError:  # the first instance of a series: make its folders
        os.makedirs(os.path.dirname(path), mode=storage.directory_permissions_mode or 0o750, exist_ok=True)
        descriptor = os.open(path, flags, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def blob_get(*, key: str) -> bytes:
    with dicom_storage().open(key, "rb") as handle:
        return handle.read()


def blob_delete(*, key: str) -> None:
    dicom_storage().delete(key)


def blob_exists(*, key: str) -> bool:
    return dicom_storage().exists(key)
