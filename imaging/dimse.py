"""DICOM DIMSE: the C-ECHO and C-STORE SCP (pynetdicom), run by ``manage.py dicom_scp``.

Each association runs in a thread of its own with its own database connection. Every
C-STORE goes through ``imaging.services.instance_store`` and writes one audit entry (agent =
calling AE title) in the instance's transaction; the FHIR ImagingStudy of each study the
association touched is rewritten once, when the association ends (released, aborted or
dropped). Studies left stale by a crash are synced when the SCP starts. With the database
(or broker, chain) down, a C-STORE answers 0xA700 "out of resources" at once, nothing stored,
and the association stays usable: the next C-STORE after the outage is stored. C-ECHO
touches no database and answers success throughout (the DICOM layer is up).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket

from django.conf import settings
from django.db import connection, connections, transaction
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from access import transient

from . import services
from .reading import (
    DOES_NOT_MATCH_SOP_CLASS,
    DUPLICATE_SOP_INSTANCE,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    STORAGE_SOP_CLASSES,
    TRANSFER_SYNTAXES,
    InstanceRefused,
    instance_read,
)

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
MAX_PDU = 1024 * 1024  # the largest PDU a peer may send us; fewer, larger reads per instance
_STUDIES = "_carrack_studies"  # the study ids an association stored into, on the Association


def organization_for(calling_ae: str) -> str | None:
    """The organization owning what this AE sends: the mapping, else the default, else none.

    An AE title is not a credential, so an unmapped one is never quiet: it is logged at
    WARNING each time, whether refused (base and production: no default) or given to the
    default organization (local development only; production refuses to start with one).
    """
    mapping = {key.strip(): value for key, value in settings.DICOM_AE_ORGANIZATIONS.items()}
    organization = mapping.get(calling_ae.strip())
    if organization:
        return organization
    default = settings.DICOM_DEFAULT_ORGANIZATION or None
    logger.warning("C-STORE from unmapped calling AE title %r: %s", calling_ae,
                   f"stored for the default organization {default}" if default else "refused")
    return default


def scp_application_entity(*, ae_title: str | None = None) -> AE:
    """Verification plus the stored SOP classes, each with every transfer syntax devices send."""
    ae = AE(ae_title=ae_title or settings.DICOM_AE_TITLE)
    ae.maximum_pdu_size = MAX_PDU
    ae.require_called_aet = True
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.maximum_associations = 32
    ae.add_supported_context(Verification)
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, list(TRANSFER_SYNTAXES))
    return ae


def scp_start(*, address: str, port: int, ae_title: str | None = None, block: bool = False):
    """Start the SCP; non-blocking returns the server (``.shutdown()`` stops it)."""
    ae = scp_application_entity(ae_title=ae_title)
    return ae.start_server((address, port), block=block, evt_handlers=HANDLERS)


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other processes may bind too (``SO_REUSEPORT``)."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def scp_serve(*, address: str, port: int, ae_title: str | None = None, processes: int = 1) -> None:
    """Serve in the foreground from ``processes`` processes sharing the port.

    One Python process runs its associations on one core; with ``SO_REUSEPORT`` the kernel
    spreads incoming associations over the processes. SIGTERM to the first stops them all.
    """
    connections.close_all()  # never share a database connection across fork()
    children = []
    for _ in range(max(1, processes) - 1):
        pid = os.fork()
        if pid == 0:
            children = []
            break
        children.append(pid)
    if children:
        signal.signal(signal.SIGTERM, lambda signum, frame: _stop(children))
    ae = scp_application_entity(ae_title=ae_title)
    server = ae.make_server((address, port), evt_handlers=HANDLERS, server_class=SharedPortServer)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def _stop(children: list[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    raise SystemExit(0)


# --- handlers -----------------------------------------------------------------------------------

def on_connection_open(event) -> None:
    """No Nagle on accepted sockets: without it each C-STORE response waits ~40 ms for an ACK."""
    sock = getattr(event.assoc.dul.socket, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def on_echo(event) -> int:
    return SUCCESS


def on_store(event) -> int:
    """Store one instance; the returned status tells the SCU what happened."""
    calling_ae = _calling_ae(event)
    peer = event.assoc.requestor.address
    organization = organization_for(calling_ae)
    if organization is None:
        return _refused(calling_ae, peer, NOT_AUTHORIZED, "calling AE title is not mapped to an organization")
    try:
        incoming = instance_read(event.encoded_dataset())
        if incoming.sop_class_uid != str(event.request.AffectedSOPClassUID):
            raise InstanceRefused(DOES_NOT_MATCH_SOP_CLASS, "data set does not match the SOP class sent")
        outcome = transient.run_retrying(lambda: _store(incoming, organization, calling_ae, peer),
                                         logger=logger, what=f"C-STORE from {calling_ae}")
        conflict = outcome.result == services.CONFLICT
    except InstanceRefused as error:
        return _refused(calling_ae, peer, error.status, error.message)
    except Exception as error:
        fault = transient.fault_of(error)
        if fault is not None:  # nothing was stored: the device sends it again later
            transient.log_fault(logger, f"C-STORE from {calling_ae}", fault, error)
            transient.connections_reset()  # no request signals here (a failed rollback already drops it)
            if fault is transient.Fault.DATABASE:
                return OUT_OF_RESOURCES  # nothing can be audited now; the refusal is logged
            return _refused(calling_ae, peer, OUT_OF_RESOURCES, fault.value)
        logger.error("C-STORE failed from %s (%s)", calling_ae, type(error).__name__)
        logger.debug("C-STORE failure", exc_info=error)
        return PROCESSING_FAILURE
    if conflict:
        return DUPLICATE_SOP_INSTANCE
    if outcome.result == services.STORED:
        event.assoc.__dict__.setdefault(_STUDIES, set()).add(outcome.study.pk)
    return SUCCESS


def _store(incoming, organization: str, calling_ae: str, peer: str | None) -> services.StoreOutcome:
    """The instance and its audit entry in one transaction (run again after a deadlock)."""
    with transaction.atomic():
        outcome = services.instance_store(incoming=incoming, organization_id=organization)
        conflict = outcome.result == services.CONFLICT
        services.dimse_store_audit(calling_ae=calling_ae, study=outcome.study, peer=peer,
                                   outcome="4" if conflict else "0",
                                   description="duplicate SOP instance with different content"
                                   if conflict else None)
    return outcome


def _calling_ae(event) -> str:
    title = event.assoc.requestor.ae_title
    return (title.decode("ascii", "replace") if isinstance(title, bytes) else str(title)).strip()


def _refused(calling_ae: str, peer: str | None, status: int, message: str) -> int:
    """Audit a refused C-STORE (outcome 4) in a transaction of its own; return its status."""
    try:
        with transaction.atomic():
            services.dimse_store_audit(calling_ae=calling_ae, study=None, peer=peer, outcome="4",
                                       description=f"C-STORE refused: {message}")
    except Exception as error:  # noqa: BLE001 - the refusal stands even if its audit fails
        logger.error("audit of a refused C-STORE failed (%s)", type(error).__name__)
    return status


def on_association_end(event) -> None:
    """Released, aborted or dropped: sync the FHIR ImagingStudy of each study it stored into."""
    studies = event.assoc.__dict__.pop(_STUDIES, None)
    try:
        if studies:
            services.study_sync_fhir(study_ids=studies)
    except Exception as error:  # noqa: BLE001 - they stay marked stale and are synced later
        logger.error("ImagingStudy sync failed (%s); the studies stay stale", type(error).__name__)
    finally:
        connection.close()  # this thread's connection; the association's thread ends now


HANDLERS = [
    (evt.EVT_CONN_OPEN, on_connection_open),
    (evt.EVT_C_ECHO, on_echo),
    (evt.EVT_C_STORE, on_store),
    (evt.EVT_RELEASED, on_association_end),
    (evt.EVT_ABORTED, on_association_end),
    (evt.EVT_CONN_CLOSE, on_association_end),
]
