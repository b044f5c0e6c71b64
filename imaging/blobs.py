"""Object storage for DICOM files: Django's ``STORAGES["dicom"]`` (filesystem or S3-compatible).

Keys are ``<organization>/<study UID>/<SOP UID>.dcm``: UIDs are digits and dots (checked by
``imaging.reading``) and the organization is escaped (``organization_segment``), so keys are
safe as paths and as object names, and two hospitals holding one UID never share a file. A
key is written at most once per stored instance; a file left by a rolled-back transaction is
simply overwritten by the organization's next store of that UID. Instances stored before
the organization was part of the key keep theirs (``<study>/<sop>.dcm``, named by their row).
Writes are durable before they return (fsync on a filesystem), as the rows naming them are
committed next.
"""

from __future__ import annotations

import concurrent.futures
import os

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages


def dicom_storage():
    return storages["dicom"]


def instance_key(organization_id: str, study_uid: str, sop_uid: str, *, suffix: str = "") -> str:
    """One folder per organization's study (a new folder costs more than the file written into it).

    UIDs are per organization, so the organization is part of the key: hospital B's copy of
    a study hospital A holds goes next to nothing of A's.
    """
    return f"{organization_segment(organization_id)}/{study_uid}/{sop_uid}{suffix}.dcm"


def organization_segment(organization_id: str) -> str:
    """The organization as one path segment: letters, digits, ``-`` and ``_`` as they are,
    any other byte as ``~XX`` (so ``/``, ``.`` and ``..`` cannot leave the folder, and no two
    organizations share a segment: ``~`` itself is always escaped)."""
    return "".join(char if char.isascii() and (char.isalnum() or char in "-_")
                   else "".join(f"~{byte:02x}" for byte in char.encode()) for char in organization_id) or "~"


def blob_put(*, key: str, data: bytes) -> None:
    """Write (or overwrite) one object, durably (see ``blobs_put``)."""
    blobs_put([(key, data)])


def blobs_put(items: list[tuple[str, bytes]]) -> None:
    """Write (or overwrite) objects; each is durable when this returns.

    The database rows that name them are committed after this, so a stored instance never
    points at a file a crash lost: on a filesystem each file is fsynced, and so is each
    folder that got a new entry; an object store's PUT is durable when it returns.
    """
    pending = PendingWrites(items, threads=False)
    pending.wait()


class PendingWrites:
    """Objects being written (by default each in a writer thread) while the caller goes on.

    ``wait`` returns once all are durable. The files' fsyncs run at the same time, so the
    filesystem's journal commits one batch for them rather than one after another.
    """

    def __init__(self, items: list[tuple[str, bytes]], *, threads: bool = True) -> None:
        storage = dicom_storage()
        write = _file_writer(storage) if type(storage) is FileSystemStorage else _object_writer(storage)
        if threads:
            self._futures = [_writer().submit(write, key, data) for key, data in items]
        else:
            self._futures = []
            for key, data in items:
                future: concurrent.futures.Future = concurrent.futures.Future()
                try:
                    future.set_result(write(key, data))
                except BaseException as error:
                    future.set_exception(error)
                    self._futures.append(future)
                    break
                self._futures.append(future)

    def wait(self) -> None:
        """Until every object is durable; raises what the writes raised."""
        folders: set[str] = set()
        for future in self._futures:
            folders.update(future.result())
        for folder in sorted(folders):
            _fsync_folder(folder)

    def settle(self) -> None:
        """Until the writes are over, whatever they raised (the caller is failing already)."""
        concurrent.futures.wait(self._futures)


_WRITER: concurrent.futures.ThreadPoolExecutor | None = None
_WRITER_PID = 0


def _writer() -> concurrent.futures.ThreadPoolExecutor:
    """The process's writer threads (made after a fork, never inherited from the parent)."""
    global _WRITER, _WRITER_PID
    if _WRITER is None or _WRITER_PID != os.getpid():
        _WRITER = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicom-blobs")
        _WRITER_PID = os.getpid()
    return _WRITER


def _object_writer(storage):
    def write(key: str, data: bytes) -> set[str]:
        saved = storage.save(key, ContentFile(data))
        if saved != key:  # a storage that renames instead of overwriting would lose the link
            storage.delete(saved)
            raise RuntimeError("the DICOM storage must overwrite objects (allow_overwrite / file_overwrite)")
        return set()

    return write


def _file_writer(storage: FileSystemStorage):
    """Write and fsync one file (the common case, without Storage.save's generic steps).

    Returns the folders that got a new entry, to be fsynced once the files are.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    mode = storage.file_permissions_mode or 0o640
    folder_mode = storage.directory_permissions_mode or 0o750

    def write(key: str, data: bytes) -> set[str]:
        path = storage.path(key)  # refuses a key that would leave the storage folder
        folder = os.path.dirname(path)
        folders = {folder}
        try:
            descriptor = os.open(path, flags, mode)
        except FileNotFoundError:  # the first instance of a study: make its folder
            folders.update(_make_folders(folder, folder_mode))
            descriptor = os.open(path, flags, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return folders

    return write


def _make_folders(folder: str, mode: int) -> set[str]:
    """Make a folder and any missing parents; the folders that got a new entry."""
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    if missing:  # another writer may have made it meanwhile
        os.makedirs(missing[0], mode=mode, exist_ok=True)
    return {os.path.dirname(path) for path in missing}


def _fsync_folder(folder: str) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def blob_get(*, key: str) -> bytes:
    with dicom_storage().open(key, "rb") as handle:
        return handle.read()


def blob_delete(*, key: str) -> None:
    dicom_storage().delete(key)


def blob_exists(*, key: str) -> bool:
    return dicom_storage().exists(key)
