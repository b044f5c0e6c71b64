"""Where the embedded servers listen: one computation for the supervisor and the settings.

``carrack-stack run`` and a hand-run ``manage.py``, ``celery`` or shell read the same
``CARRACK_*_PORT`` variables through these functions, so with the same environment they
reach the same servers. Pure: imported by ``config.settings`` before Django is set up.
"""

from __future__ import annotations

from collections.abc import Mapping

DEFAULT_PORTS = {"web": 8000, "postgres": 55432, "redis": 56379, "anvil": 8545, "dicom": 11112}
PORT_VARIABLES = {
    "web": "CARRACK_WEB_PORT",
    "postgres": "CARRACK_PG_PORT",
    "redis": "CARRACK_REDIS_PORT",
    "anvil": "CARRACK_CHAIN_PORT",
    "dicom": "CARRACK_DICOM_PORT",
}
DATABASE_NAME = "carrack"
_URLS = {
    "postgres": "postgres://postgres@127.0.0.1:{port}/{database}",
    "redis": "redis://127.0.0.1:{port}/0",
    "anvil": "http://127.0.0.1:{port}",
}


def embedded_ports(environ: Mapping[str, str]) -> dict[str, int]:
    """Each server's port: its ``CARRACK_*_PORT`` variable, else the fixed ``make run`` default."""
    return {name: int(environ.get(PORT_VARIABLES[name]) or default)
            for name, default in DEFAULT_PORTS.items()}


def embedded_url(name: str, port: int, database: str = DATABASE_NAME) -> str:
    """The URL a client uses for the embedded ``postgres``, ``redis`` or ``anvil`` on ``port``."""
    return _URLS[name].format(port=port, database=database)
