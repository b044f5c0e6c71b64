"""``manage.py dicom_scp``: the DICOM C-ECHO/C-STORE SCP in the foreground (``make run`` starts it)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from imaging.dimse import scp_serve
from imaging.services import study_sync_stale


class Command(BaseCommand):
    help = "Run the DICOM SCP (C-ECHO, C-STORE) on DICOM_BIND_ADDRESS:CARRACK_DICOM_PORT as DICOM_AE_TITLE."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--address", default=None, help="bind address (default DICOM_BIND_ADDRESS)")
        parser.add_argument("--port", type=int, default=None, help="TCP port (default CARRACK_DICOM_PORT)")
        parser.add_argument("--ae-title", default=None, help="this SCP's AE title (default DICOM_AE_TITLE)")
        parser.add_argument("--processes", type=int, default=None,
                            help="processes sharing the port (default DICOM_SCP_PROCESSES)")

    def handle(self, *args, **options) -> None:
        # pynetdicom logs every PDU at INFO; keep the log to what an operator needs.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        address = options["address"] or settings.DICOM_BIND_ADDRESS
        port = options["port"] or settings.DICOM_PORT
        ae_title = options["ae_title"] or settings.DICOM_AE_TITLE
        synced = study_sync_stale()
        if synced:
            self.stdout.write(f"synced {synced} stale ImagingStudy resource(s)")
        processes = options["processes"] or settings.DICOM_SCP_PROCESSES
        self.stdout.write(f"DICOM SCP {ae_title} listening on {address}:{port} ({processes} process(es))")
        self.stdout.flush()
        scp_serve(address=address, port=port, ae_title=ae_title, processes=processes)
