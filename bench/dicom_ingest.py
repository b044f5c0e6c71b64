"""DICOM ingest: STOW-RS and C-STORE into Carrack against Orthanc, same files, same run.

The files are pydicom's own (US multi-frame JPEG baseline, US JPEG 2000, US RGB, US palette,
CT, MR), copied ``--copies`` times with fresh Study/Series/SOP Instance UIDs so every store is
a new instance; both servers get byte-identical requests. STOW-RS posts multipart bodies of
``--batch`` instances from ``--clients`` threads; C-STORE sends from ``--clients`` associations
at once with pynetdicom's SCU (and with dcmtk's ``storescu`` when installed). Carrack's time
runs until its ImagingStudy resources are written (after each association for C-STORE).

Orthanc 1.10 (Debian ``orthanc`` + ``orthanc-dicomweb``) always binds 0.0.0.0, so the script
re-runs itself in a private network namespace (``unshare -n``, root) with only loopback up and
starts everything there, each in a throwaway folder: an embedded PostgreSQL and Redis
(``config.stack``), Carrack's gunicorn (2 gthread workers × 4 threads, as ``make run``) and
``manage.py dicom_scp``, and Orthanc (default SQLite index, files on disk, DICOMweb plugin).
Both servers first store ``--warmup`` copies by STOW-RS (not measured), and Carrack's database
is analyzed, as autovacuum keeps a running server's statistics. ``--protocols stow`` skips
C-STORE.

    apt-get install -y orthanc orthanc-dicomweb dcmtk      # once, as root
    .venv/bin/python bench/dicom_ingest.py --copies 30 --clients 2 --rounds 2
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import BASE_DIR, Gunicorn, api_token, django_setup, free_port, table

FILES = ("examples_ybr_color.dcm", "examples_jpeg2k.dcm", "examples_rgb_color.dcm", "examples_palette.dcm",
         "CT_small.dcm", "MR_small.dcm")
ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
CALLING_AE = "BENCH"
INSIDE = "CARRACK_BENCH_NETNS"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=30, help="copies of the 6 files per round and protocol")
    parser.add_argument("--batch", type=int, default=6, help="instances per STOW-RS request")
    parser.add_argument("--clients", type=int, default=2, help="concurrent HTTP clients / associations")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; servers alternate which goes first")
    parser.add_argument("--web-workers", type=int, default=2, help="Carrack's gunicorn workers (make run: 2)")
    parser.add_argument("--protocols", default="stow,c-store", help="stow, c-store or both (comma-separated)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="copies of the 6 files stored by STOW-RS into each server before measuring")
    return parser.parse_args()


def reexec_in_private_network() -> None:
    """Run this script again in a network namespace of its own, loopback only."""
    if os.environ.get(INSIDE) == "1":
        return
    if not (Path(ORTHANC).exists() and Path(ORTHANC_DICOMWEB).exists()):
        raise SystemExit("Orthanc is not installed: apt-get install -y orthanc orthanc-dicomweb")
    command = ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"',
               sys.executable, *sys.argv]
    raise SystemExit(subprocess.run(command, env={**os.environ, INSIDE: "1"}, check=False).returncode)


# --- corpus -------------------------------------------------------------------------------------

def corpus(copies: int) -> list[bytes]:
    """``copies`` × the 6 files, each copy with new UIDs (files sharing a study still share it)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    originals = [pydicom.dcmread(get_testdata_file(name)) for name in FILES]
    out = []
    for _ in range(copies):
        mapping: dict[str, str] = {}
        for original in originals:
            dataset = original.copy()
            dataset.file_meta = original.file_meta.copy()
            for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                old = str(original[keyword].value)
                dataset[keyword].value = mapping.setdefault(old, generate_uid())
            dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            buffer = io.BytesIO()
            dataset.save_as(buffer, enforce_file_format=True)
            out.append(buffer.getvalue())
    return out


def multipart_bodies(files: list[bytes], batch: int) -> list[bytes]:
    boundary = b"carrack-bench-boundary"
    bodies = []
    for start in range(0, len(files), batch):
        parts = [b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + data + b"\r\n"
                 for data in files[start:start + batch]]
        bodies.append(b"".join(parts) + b"--" + boundary + b"--\r\n")
    return bodies


# --- servers ------------------------------------------------------------------------------------

class Orthanc:
    """Orthanc with the DICOMweb plugin, default storage, in a throwaway folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Orthanc:
        self.folder.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "bench", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": "ORTHANC", "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpServerEnabled": True,
            "Plugins": [ORTHANC_DICOMWEB], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
            "SaveJobs": False, "StorageCompression": False,
        }
        path = self.folder / "orthanc.json"
        path.write_text(json.dumps(config))
        log = open(self.folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: _http_ok(f"{self.url}/system") and _port_open(self.dicom_port), "Orthanc")
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)

    def count(self) -> int:
        with urllib.request.urlopen(f"{self.url}/statistics", timeout=10) as response:
            return int(json.load(response)["CountInstances"])


class CarrackScp:
    """``manage.py dicom_scp`` on a free port; BENCH belongs to the benchmark's organization."""

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.env = {**env, "DICOM_AE_ORGANIZATIONS": f"{CALLING_AE}=bench-hospital"}
        self.log = folder / "dicom-scp.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> CarrackScp:
        log = open(self.log, "wb")
        self.process = subprocess.Popen([sys.executable, "manage.py", "dicom_scp", "--port", str(self.port)],
                                        cwd=BASE_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: _port_open(self.port), "dicom_scp")
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(ready, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} did not start in {timeout:.0f} s")
        time.sleep(0.2)


# --- load ---------------------------------------------------------------------------------------

def stow(url: str, headers: dict[str, str], bodies: list[bytes], clients: int) -> float:
    """Seconds to post every body (each must be answered 200)."""
    import threading

    import requests

    local = threading.local()
    content_type = 'multipart/related; type="application/dicom"; boundary=carrack-bench-boundary'

    def post(body: bytes) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(url, data=body, timeout=300,
                                      headers={**headers, "Content-Type": content_type})
        if response.status_code != 200:
            raise RuntimeError(f"STOW-RS answered {response.status_code}: {response.text[:300]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, bodies))
    return time.perf_counter() - started


def c_store_pynetdicom(port: int, called_ae: str, paths: list[Path], clients: int) -> float:
    """Seconds to C-STORE every file over ``clients`` associations (each must succeed)."""
    import pydicom
    from pynetdicom import AE, evt

    contexts = set()
    for path in paths:
        meta = pydicom.dcmread(path, stop_before_pixels=True)
        contexts.add((str(meta.SOPClassUID), str(meta.file_meta.TransferSyntaxUID)))

    def send(chunk: list[Path]) -> None:
        ae = AE(ae_title=CALLING_AE)
        for sop_class, syntax in contexts:
            ae.add_requested_context(sop_class, syntax)
        assoc = ae.associate("127.0.0.1", port, ae_title=called_ae, evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])
        if not assoc.is_established:
            raise RuntimeError("association refused")
        try:
            for path in chunk:
                status = assoc.send_c_store(path)
                if status.Status != 0:
                    raise RuntimeError(f"C-STORE status 0x{status.Status:04X}")
        finally:
            assoc.release()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, [paths[i::clients] for i in range(clients)]))
    return time.perf_counter() - started


def _no_delay(event) -> None:
    """The SCU's socket without Nagle too (pynetdicom leaves it on): measure servers, not stalls."""
    import socket

    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def c_store_dcmtk(port: int, called_ae: str, paths: list[Path], clients: int) -> float:
    """The same with dcmtk's storescu: per client, one association per transfer syntax family."""
    import pydicom

    flags = {"1.2.840.10008.1.2.4.50": ["-xy"], "1.2.840.10008.1.2.4.90": ["-xv"]}
    groups: dict[str, list[Path]] = {}
    for path in paths:
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(syntax if syntax in flags else "native", []).append(path)

    def send(index: int) -> None:
        for syntax, group in groups.items():
            chunk = group[index::clients]
            if not chunk:
                continue
            result = subprocess.run(["storescu", "-R", *flags.get(syntax, []), "-aet", CALLING_AE, "-aec",
                                     called_ae, "127.0.0.1", str(port), *map(str, chunk)],
                                    capture_output=True, check=False, env={**os.environ, "TCP_NODELAY": "1"})
            if result.returncode:
                raise RuntimeError(f"storescu failed: {result.stderr.decode()[:500]}")

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, range(clients)))
    return time.perf_counter() - started


def wait_synced(timeout: float = 120) -> None:
    """Until Carrack has written the ImagingStudy of every stored study."""
    from django.db import connection

    from imaging.models import Study

    deadline = time.monotonic() + timeout
    while Study.objects.filter(fhir_stale=True).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("ImagingStudy sync did not finish")
        time.sleep(0.005)
    connection.close()


def analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    connection.close()


def counted(count, expected: int, timeout: float = 10) -> bool:
    """Whether a server's instance count reaches ``expected`` (Orthanc's statistics may lag)."""
    deadline = time.monotonic() + timeout
    while count() != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def carrack_count() -> int:
    from imaging.models import Instance

    return Instance.objects.count()


# --- run ----------------------------------------------------------------------------------------

def main() -> None:
    args = arguments()
    reexec_in_private_network()
    import logging

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    from config.stack.services import PostgresServer, RedisServer
    from config.stack.supervisor import running

    with tempfile.TemporaryDirectory(prefix="carrack-dicom-bench-") as tmp:
        folder = Path(tmp)
        folder.chmod(0o755)
        servers = [PostgresServer(name="postgres", state_dir=folder, port=free_port()),
                   RedisServer(name="redis", state_dir=folder, port=free_port())]
        with running(servers) as urls:
            os.environ.update(urls, CARRACK_STATE_DIR=str(folder / "carrack"))
            django_setup(urls["DATABASE_URL"])
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            token = api_token()
            print(f"{len(FILES)} files × {args.copies} copies per round and protocol, "
                  f"{args.clients} clients, STOW batches of {args.batch}, {args.rounds} rounds", flush=True)
            rows = measure(args, folder, token)
    print(table(["protocol", "client", "server", "instances", "MB", "seconds", "instances/s", "MB/s",
                 "ratio to Orthanc"], rows))


def measure(args: argparse.Namespace, folder: Path, token: str) -> list[list]:
    env = dict(os.environ)
    totals: dict[tuple[str, str, str], list[float]] = {}
    sizes: dict[tuple[str, str, str], list[int]] = {}
    protocols = {name.strip().lower() for name in args.protocols.split(",")}
    clients = ["pynetdicom"] + (["storescu"] if shutil.which("storescu") else [])
    if "c-store" not in protocols:
        clients = []
    with Gunicorn(os.environ["DATABASE_URL"], workers=args.web_workers, worker_class="gthread", threads=4,
                  conn_max_age=60) as web, CarrackScp(env, folder) as scp, Orthanc(folder / "orthanc") as orthanc:
        targets = {
            "Orthanc": {"stow": f"{orthanc.url}/dicom-web/studies", "headers": {}, "port": orthanc.dicom_port,
                        "aet": "ORTHANC", "count": orthanc.count, "settle": lambda: None},
            "Carrack": {"stow": f"{web.url}/dicomweb/studies", "headers": {"Authorization": f"Bearer {token}"},
                        "port": scp.port, "aet": "CARRACK", "count": carrack_count, "settle": wait_synced},
        }
        # Not measured: the first requests load code and models in every worker thread (8 at once
        # reach all of gunicorn's, each with its database connection) and give PostgreSQL tables
        # that are not empty; ANALYZE then gives it their statistics, as autovacuum keeps them on
        # a running server (planned against empty tables, foreign-key checks slow down with every
        # row until autovacuum's first pass). Orthanc gets the same requests.
        warm = multipart_bodies(corpus(args.warmup), args.batch)
        for target in targets.values():
            stow(target["stow"], target["headers"], warm, max(8, args.clients))
            target["settle"]()
        analyze()
        for round_number in range(args.rounds):
            order = list(targets) if round_number % 2 == 0 else list(reversed(targets))
            files = corpus(args.copies)
            bodies = multipart_bodies(files, args.batch)
            for name in order if "stow" in protocols else ():
                target = targets[name]
                before = target["count"]()
                seconds = stow(target["stow"], target["headers"], bodies, args.clients)
                target["settle"]()
                seconds_total = seconds
                assert counted(target["count"], before + len(files)), f"{name} did not store every STOW instance"
                key = ("STOW-RS", "requests", name)
                totals.setdefault(key, []).append(seconds_total)
                sizes[key] = [len(files), sum(map(len, files))]
            for client in clients:
                files = corpus(args.copies)
                paths = write_files(folder / f"round{round_number}-{client}", files)
                for name in order:
                    target = targets[name]
                    before = target["count"]()
                    send = c_store_pynetdicom if client == "pynetdicom" else c_store_dcmtk
                    started = time.perf_counter()
                    send(target["port"], target["aet"], paths, args.clients)
                    target["settle"]()
                    seconds = time.perf_counter() - started
                    assert counted(target["count"], before + len(files)), f"{name} did not store every C-STORE"
                    key = ("C-STORE", client, name)
                    totals.setdefault(key, []).append(seconds)
                    sizes[key] = [len(files), sum(map(len, files))]
            print(f"round {round_number + 1} done", flush=True)
    return rows_of(totals, sizes)


def write_files(folder: Path, files: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, data in enumerate(files):
        path = folder / f"{index:05d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return paths


def rows_of(totals: dict, sizes: dict) -> list[list]:
    """One row per protocol, client and server: the best round (least disturbed by other load)."""
    rows = []
    for (protocol, client, server), seconds in totals.items():
        count, size = sizes[(protocol, client, server)]
        best = min(seconds)
        reference = min(totals[(protocol, client, "Orthanc")])
        rows.append([protocol, client, server, count, f"{size / 2**20:.1f}", f"{best:.2f}", count / best,
                     size / 2**20 / best, f"{reference / best:.2f}"])
    return sorted(rows, key=lambda row: (row[0] != "STOW-RS", row[1], row[2] != "Orthanc"))


if __name__ == "__main__":
    main()
