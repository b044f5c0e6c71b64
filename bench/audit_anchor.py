"""Audit anchoring: gas per batch, sustained anchoring rate and lag, proof size and verify time.

Starts its own anvil (``config.stack.services.AnvilServer``, no state file) on a free 127.0.0.1
port, deploys ``AuditAnchor`` with ``ledger.services.contracts_deploy`` and works on a throwaway
PostgreSQL database whose ledger tables it TRUNCATEs first (its name must contain "bench"):

    createdb -h 127.0.0.1 -U postgres carrack_audit_bench
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/carrack_audit_bench \\
        DJANGO_SETTINGS_MODULE=config.settings.test .venv/bin/python manage.py migrate
    .venv/bin/python bench/audit_anchor.py [--seconds 60] [--rate 2500] [--singles 300]

Three parts, each printing a Markdown table (pasted into docs/benchmarks.md):

1. Gas: real ``gasUsed`` of ``AuditAnchor.anchor`` for batches of 1, 1,000 and 1,000,000 events
   (the roots are real RFC 6962 roots over synthetic leaves), against the reference of one
   transaction per event (``--singles`` single-event anchors in a row); then the other
   transactions: deploy, member registration (``grantRole``), the no-op repeats and a repeat
   older than the contract's window (mined with a fixed gas limit, reverts ``Overlap``).
2. Sustained anchoring: ``--producers`` threads of a process of their own (as web workers are)
   append BALP AuditEvents with ``ledger.services.audit_append`` at ``--rate`` events/s while the
   main process runs ``anchor_tick`` every second (AUDIT_ANCHOR_MAX_ENTRIES
   5000, interval 1 s, 1 confirmation) for ``--seconds``; events/s appended and anchored,
   backlog over time, lag from ``recorded`` to the end of the tick that confirmed the batch.
   Reference: the raw INSERT rate of the same rows (entry + salt, one commit per event) into
   plain tables without triggers, indexes or foreign keys, in the same run.
3. Proofs at batch sizes 1, 1,000 and 1,000,000 (the anchored roots of part 1): JSON bytes,
   a compact binary estimate, and verification time (``verify_offline``: hashes and Merkle
   path, no RPC; ``verify_proof``: the same plus the checks against the local anvil).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone as dt_timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import arguments, django_setup, free_port, percentile, table  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/carrack_audit_bench"
BATCH_SIZES = (1, 1_000, 1_000_000)


# --- set-up ----------------------------------------------------------------------------------

def reset_ledger(database_url: str) -> None:
    from django.db import connection

    if "bench" not in connection.settings_dict["NAME"]:
        raise SystemExit(f"refusing to TRUNCATE the ledger of {connection.settings_dict['NAME']!r}: "
                         f"use a database whose name contains 'bench'")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE ledger_auditsalt, ledger_auditentry, ledger_anchorbatch "
                       "RESTART IDENTITY CASCADE")


def rpc(url: str, method: str, *params):
    import requests

    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                      "params": list(params)}, timeout=30).json()
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def deploy(client, registry: Path) -> str:
    from django.conf import settings

    from ledger.services import contracts_deploy

    return contracts_deploy(client=client, names=["AuditAnchor"], build_dir=settings.CONTRACTS_BUILD_DIR,
                            registry=registry)["AuditAnchor"]["address"]


def balp_event(n: int, recorded: datetime) -> tuple[dict, str]:
    from django.conf import settings

    from ledger.balp import audit_event_balp

    patient = f"{n % 5000:08x}-bench-patient"
    interaction = ("read", "search-type", "create", "read", "vread")[n % 5]
    event = audit_event_balp(
        interaction=interaction, agent=f"clinician-{n % 37}", outcome="0", recorded=recorded,
        observer=settings.NODE_NAME, resource=None if interaction == "search-type" else f"Patient/{patient}",
        patient=patient, query=f"patient=Patient/{patient}&code=8867-4" if interaction == "search-type" else None,
        client="bench-ehr-app",
    )
    return event, patient


# --- 1. gas ------------------------------------------------------------------------------------

def synthetic_tree(size: int, event_text: str, salt: bytes, seq: int, index: int) -> list[bytes]:
    """``size`` leaves: random ones around the real salted leaf of ``event_text`` at ``index``."""
    from ledger.verify import audit_format

    leaves = [hashlib.sha256(b"\0" + i.to_bytes(8, "big")).digest() for i in range(size)]
    leaves[index] = audit_format.leaf_hash(salt, seq, event_text.encode())
    return leaves


def gas_part(client, address: str, url: str, singles: int) -> tuple[list[list], dict]:
    from ledger.chain import load_artifact
    from ledger.verify import audit_format, merkle
    from django.conf import settings

    artifact = load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR)

    def anchor(first: int, last: int, root: bytes) -> dict:
        sent = client.transact(artifact, address, "anchor", first, last, root)
        receipt = rpc(url, "eth_getTransactionReceipt", sent["transaction"])
        tx = rpc(url, "eth_getTransactionByHash", sent["transaction"])
        return {"gas": int(receipt["gasUsed"], 16), "calldata": (len(tx["input"]) - 2) // 2,
                "transaction": sent["transaction"], "block_number": int(receipt["blockNumber"], 16),
                "block_hash": receipt["blockHash"]}

    first_anchor = anchor(1, 1, secrets.token_bytes(32))
    t0 = time.perf_counter()
    single_gas = [anchor(seq, seq, secrets.token_bytes(32))["gas"] for seq in range(2, 2 + singles)]
    single_seconds = time.perf_counter() - t0
    next_seq = 2 + singles

    rows = [["first anchor of a member (registered, never anchored)", 1, first_anchor["gas"],
             float(first_anchor["gas"]), first_anchor["calldata"], "-"]]
    reference = statistics.mean(single_gas)
    rows.append([f"reference: 1 tx per event ({singles} in a row, {min(single_gas):,}–{max(single_gas):,})",
                 1, round(reference),
                 reference, first_anchor["calldata"], "1.0"])
    proof_inputs = {}
    for size in BATCH_SIZES:
        first = next_seq
        index = size // 2
        seq = first + index
        recorded = datetime.now(dt_timezone.utc)
        event_text = audit_format.canonical_json(balp_event(seq, recorded)[0])
        salt = secrets.token_bytes(32)
        t0 = time.perf_counter()
        leaves = synthetic_tree(size, event_text, salt, seq, index)
        root = merkle.root(leaves)
        tree_seconds = time.perf_counter() - t0
        mined = anchor(first, first + size - 1, root)
        next_seq += size
        per_event = mined["gas"] / size
        rows.append([f"batch of {size:,}", size, mined["gas"], per_event, mined["calldata"],
                     f"{reference / per_event:,.0f}x less"])
        proof_inputs[size] = {"leaves": leaves, "first": first, "index": index, "seq": seq,
                              "event": event_text, "salt": salt, "root": root, "mined": mined,
                              "tree_seconds": tree_seconds}
        print(f"  batch {size:,}: {mined['gas']:,} gas, root over {size:,} leaves in {tree_seconds:.2f} s",
              flush=True)
    extra = {"single_min": min(single_gas), "single_max": max(single_gas),
             "single_tx_per_s": singles / single_seconds, "address": address,
             "artifact": artifact,
             "other": other_transactions(client, artifact, address, url, next_seq)}
    return rows, {"proofs": proof_inputs, **extra}


def other_transactions(client, artifact, address: str, url: str, next_seq: int) -> list[list]:
    """Gas of everything but a new anchor: deploy, registration, repeats (``next_seq``: the next
    free seq of the node's member, whose last anchors are the three batches)."""
    from eth_account import Account

    from ledger.chain import ContractRejected

    def gas(tx_hash: str) -> int:
        return int(rpc(url, "eth_getTransactionReceipt", tx_hash)["gasUsed"], 16)

    def triple(event: dict) -> tuple[int, int, bytes]:
        return event["args"]["firstSeq"], event["args"]["lastSeq"], event["args"]["root"]

    deployed = client.deploy(artifact, client.address)
    role = client.call(artifact, address, "MEMBER_ROLE")
    newcomer = Account.create().address
    granted = client.transact(artifact, address, "grantRole", role, newcomer)
    newest = client.events(artifact, address, "Anchored", member=client.address)[-16:]
    repeat = [client.transact(artifact, address, "anchor", *triple(e))["transaction"]
              for e in (newest[-1], newest[0])]
    # The 17th newest anchor is out of the window: mined with a fixed gas limit, it reverts.
    old = triple(client.events(artifact, address, "Anchored", member=client.address)[-17])
    max_fee, priority = client.fee_suggestion()
    signed = client.signed_call(artifact, address, "anchor", *old, gas=200_000,
                                nonce=client.nonce(client.address, pending=True),
                                max_fee_per_gas=max_fee, max_priority_fee_per_gas=priority)
    client.send_raw(signed.raw)
    while (receipt := client.receipt(signed.tx_hash)) is None:
        time.sleep(0.05)
    assert receipt["status"] == 0, "a repeat older than the window must revert"
    try:  # the estimate (from the member) names the revert
        client.signed_call(artifact, address, "anchor", *old, nonce=0, max_fee_per_gas=max_fee,
                           max_priority_fee_per_gas=priority)
        reason = "nothing"
    except ContractRejected as error:
        reason = str(error)
    return [
        ["deploy AuditAnchor", gas(deployed["transaction"])],
        ["grantRole(MEMBER_ROLE, new member) = registration (16 ring slots, accumulator, "
         "member slot)", gas(granted["transaction"])],
        ["exact repeat of the newest anchor (no-op, no event)", gas(repeat[0])],
        ["exact repeat of the 16th newest anchor (no-op, no event)", gas(repeat[1])],
        [f"exact repeat of the 17th newest anchor (reverts {reason})", gas(signed.tx_hash)],
        ["next anchor after these (steady state)", gas(client.transact(
            artifact, address, "anchor", next_seq, next_seq + 999,
            secrets.token_bytes(32))["transaction"])],
    ]


# --- 2. sustained anchoring --------------------------------------------------------------------

def in_threads(work, threads: int, seconds: float) -> float:
    """Run ``work(k, deadline) -> count`` in ``threads`` threads; the total events/s."""
    counts = [0] * threads

    def run(k: int) -> None:
        counts[k] = work(k, deadline)

    t0 = time.perf_counter()
    deadline = t0 + seconds
    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / (time.perf_counter() - t0)


def raw_insert_rate(database_url: str, seconds: float, threads: int) -> float:
    """Reference: the same two rows per event into plain tables, one commit per event."""
    import psycopg

    from ledger.verify import audit_format

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_plain_entry, bench_plain_salt")
        conn.execute("CREATE TABLE bench_plain_entry (id bigserial PRIMARY KEY, recorded timestamptz, "
                     "event text, patient_id varchar(64), agent varchar(150), outcome varchar(2))")
        conn.execute("CREATE TABLE bench_plain_salt (entry_id bigint PRIMARY KEY, salt bytea)")

    def work(k: int, deadline: float) -> int:
        count = 0
        with psycopg.connect(database_url, autocommit=True) as conn:
            while time.perf_counter() < deadline:
                recorded = datetime.now(dt_timezone.utc)
                event, patient = balp_event(count * threads + k, recorded)
                with conn.transaction():
                    entry_id = conn.execute(
                        "INSERT INTO bench_plain_entry (recorded, event, patient_id, agent, outcome) "
                        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
                        [recorded, audit_format.canonical_json(event), patient, "clinician", "0"]).fetchone()[0]
                    conn.execute("INSERT INTO bench_plain_salt (entry_id, salt) VALUES (%s, %s)",
                                 [entry_id, secrets.token_bytes(32)])
                count += 1
        return count

    rate = in_threads(work, threads, seconds)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_plain_entry, bench_plain_salt")
    return rate


def append_only_rate(seconds: float, threads: int) -> float:
    """``audit_append`` as fast as it goes, no anchoring running (the entries stay for part 2)."""
    from django.db import connection

    from ledger.services import audit_append

    def work(k: int, deadline: float) -> int:
        count = 0
        try:
            while time.perf_counter() < deadline:
                recorded = datetime.now(dt_timezone.utc)
                event, patient = balp_event(count * threads + k, recorded)
                audit_append(event=event, patient_id=patient, agent="clinician", outcome="0",
                             recorded=recorded)
                count += 1
        finally:
            connection.close()
        return count

    return in_threads(work, threads, seconds)


def sustained_part(client, url: str, seconds: float, rate: float, pre: int, producers: int,
                   per_commit: int = 1) -> dict:
    """``pre``: entries already anchored before; counts below are of the new ones.

    ``per_commit`` entries share one database transaction, as the GET entries of a batch
    Bundle do (each is audited on its own, all in the request's transaction).
    """
    from django.conf import settings
    from django.db import connection, connections, transaction

    from ledger.anchoring import anchor_tick
    from ledger.services import audit_append

    settings.AUDIT_ANCHOR_MAX_ENTRIES = 5000
    settings.AUDIT_ANCHOR_INTERVAL_SECONDS = 1.0
    settings.AUDIT_ANCHOR_CONFIRMATIONS = 1
    # The producers run in a process of their own, as the web workers do: the anchoring tick
    # (the Celery worker's job) must not share their interpreter lock.
    fork = multiprocessing.get_context("fork")
    stop = fork.Event()
    appended = fork.Array("q", producers, lock=False)
    confirmed_at: dict[tuple[int, int], float] = {}
    samples: list[tuple[float, int, int, float]] = []  # (t, appended, anchored, tick seconds)
    errors: list[BaseException] = []
    anchored = [0]

    def producer(k: int, failed: list) -> None:
        try:
            start, n = time.perf_counter(), 0
            while not stop.is_set():
                due = start + n / (rate / producers)
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                recorded = datetime.now(dt_timezone.utc)
                with transaction.atomic():
                    for _ in range(per_commit):
                        event, patient = balp_event(n * producers + k, recorded)
                        audit_append(event=event, patient_id=patient, agent="clinician", outcome="0",
                                     recorded=recorded)
                        n += 1
                appended[k] = n
        except BaseException as error:  # noqa: BLE001 - the process's exit status reports it
            failed.append(error)
        finally:
            connection.close()

    def producers_process() -> None:
        failed: list = []
        threads = [threading.Thread(target=producer, args=(k, failed)) for k in range(producers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failed:
            raise failed[0]

    def anchorer(drain_until: threading.Event) -> None:
        try:
            t_start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                report = anchor_tick(client=client)
                done = time.time()
                if report.unavailable or report.conflict:
                    raise RuntimeError(f"tick failed: {report}")
                for first, last in report.confirmed:
                    confirmed_at[(first, last)] = done
                    anchored[0] = max(anchored[0], last - pre)
                samples.append((t0 - t_start, sum(appended), anchored[0], time.perf_counter() - t0))
                if drain_until.is_set() and anchored[0] >= sum(appended):
                    return
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    drained = threading.Event()
    connections.close_all()  # the child must not share the parent's database connections
    appending = fork.Process(target=producers_process)
    anchoring = threading.Thread(target=anchorer, args=(drained,))
    t_begin = time.perf_counter()
    appending.start()
    anchoring.start()
    time.sleep(seconds)
    stop.set()
    appending.join()
    load_seconds = time.perf_counter() - t_begin
    total = sum(appended)
    drained.set()
    anchoring.join(timeout=300)
    drain_seconds = time.perf_counter() - t_begin - load_seconds
    if errors:
        raise errors[0]
    if appending.exitcode:
        raise RuntimeError(f"the producers failed (exit status {appending.exitcode})")

    from ledger.models import AnchorBatch, AuditEntry

    lags = []
    batches = list(AnchorBatch.objects.filter(status="confirmed", first_seq__gt=pre).order_by("first_seq"))
    recorded = dict(AuditEntry.objects.filter(seq__isnull=False).values_list("seq", "recorded"))
    for batch in batches:
        done = confirmed_at[(batch.first_seq, batch.last_seq)]
        lags.extend(done - recorded[s].timestamp() for s in range(batch.first_seq, batch.last_seq + 1))
    gas = [int(rpc(url, "eth_getTransactionReceipt", b.tx_hash)["gasUsed"], 16) for b in batches]
    sizes = [b.last_seq - b.first_seq + 1 for b in batches]
    # Anchored within the load window (before the producer stopped): the steady-state rate.
    in_window = [(t, a) for t, _, a, _ in samples if t <= load_seconds]
    return {
        "appended": total, "load_seconds": load_seconds, "drain_seconds": drain_seconds,
        "anchored": anchored[0], "anchored_in_window": in_window[-1][1] if in_window else 0,
        "window_end": in_window[-1][0] if in_window else 0.0,
        "samples": samples, "lags": lags, "batches": len(batches), "sizes": sizes, "gas": gas,
    }


# --- 3. proofs ---------------------------------------------------------------------------------

def compact_binary_size(proof: dict, with_event: bool) -> int:
    """seq, leaf, prev, entry hash, [salt], path, root, first/last seq, chain id, contract,
    member, transaction, block number and hash, as fixed-width binary fields, [+ event]."""
    size = 8 + 32 * 3 + 32 * len(proof["merkle"]["path"]) + 32 + 8 + 8 + 8 + 20 + 20 + 32 + 8 + 32
    if with_event:
        size += 32 + len(proof["entry"]["event"].encode())
    return size


def time_call(function, minimum_seconds: float = 0.5) -> tuple[float, int]:
    """Median seconds per call over runs lasting at least ``minimum_seconds``."""
    runs, t_end, durations = 0, time.perf_counter() + minimum_seconds, []
    while time.perf_counter() < t_end or runs < 5:
        t0 = time.perf_counter()
        function()
        durations.append(time.perf_counter() - t0)
        runs += 1
    return statistics.median(durations), runs


def proofs_part(client, url: str, gas_info: dict) -> list[list]:
    import subprocess

    from ledger.verify import audit_check, audit_format, audit_proof, merkle

    rows = []
    chain_id = client.chain_id()
    for size, item in gas_info["proofs"].items():
        mined = item["mined"]
        prev = secrets.token_bytes(32)
        anchor = {"first_seq": item["first"], "last_seq": item["first"] + size - 1, "chain_id": chain_id,
                  "contract": gas_info["address"], "member": client.address,
                  "transaction": mined["transaction"], "block_number": mined["block_number"],
                  "block_hash": mined["block_hash"]}
        t0 = time.perf_counter()
        proof = audit_proof.proof_document(
            entry_id=item["seq"], seq=item["seq"], event=item["event"], salt=item["salt"], prev_hash=prev,
            entry_hash=audit_format.chain_hash(prev, item["seq"], item["leaves"][item["index"]]),
            leaves=item["leaves"], first_seq=item["first"], anchor=anchor)
        build_seconds = time.perf_counter() - t0
        assert proof["merkle"]["root"] == "0x" + item["root"].hex()
        hashes_only = json.loads(json.dumps(proof))
        del hashes_only["salt"], hashes_only["entry"]["event"]
        full_json = len(json.dumps(proof, separators=(",", ":")).encode())
        hashes_json = len(json.dumps(hashes_only, separators=(",", ":")).encode())
        offline, _ = time_call(lambda: audit_check.verify_offline(proof))
        path = [bytes.fromhex(p[2:]) for p in proof["merkle"]["path"]]
        leaf = bytes.fromhex(proof["entry"]["leaf_hash"][2:])
        merkle_only, _ = time_call(lambda: merkle.root_from_path(leaf, item["index"], size, path))
        ok, reason = audit_check.verify_proof(proof, rpc_url=url)
        if not ok:
            raise RuntimeError(f"proof of batch {size} does not verify: {reason}")
        online, _ = time_call(lambda: audit_check.verify_proof(proof, rpc_url=url), 1.0)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(proof, handle)
        cli = Path(sys.executable).parent / "carrack-verify"
        cli_times = []
        for _ in range(3):
            t0 = time.perf_counter()
            done = subprocess.run([str(cli), "audit-proof", handle.name, "--rpc", url], capture_output=True)
            cli_times.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise RuntimeError(f"carrack-verify: {done.stdout!r} {done.stderr!r}")
        os.unlink(handle.name)
        rows.append([f"{size:,}", len(path), full_json, hashes_json, compact_binary_size(proof, True),
                     compact_binary_size(proof, False), len(item["event"].encode()),
                     f"{merkle_only * 1e6:.1f}", f"{offline * 1e6:.1f}", f"{online * 1e3:.2f}",
                     f"{statistics.median(cli_times) * 1e3:.0f}", f"{build_seconds * 1e3:,.0f}"])
    return rows


# --- main --------------------------------------------------------------------------------------

def main() -> None:
    parser = arguments(__doc__.splitlines()[0])
    parser.set_defaults(database_url=os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=2500, help="target events/s of the producer")
    parser.add_argument("--producers", type=int, default=1, help="appending threads (rate is shared)")
    parser.add_argument("--per-commit", type=int, default=1,
                        help="entries per database transaction (a batch Bundle's GET entries)")
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--reference-seconds", type=float, default=10)
    args = parser.parse_args()
    django_setup(args.database_url)

    from django.conf import settings

    from config.stack.services import AnvilServer
    from ledger.chain.web3_client import Web3ChainClient

    reset_ledger(args.database_url)
    state = Path(tempfile.mkdtemp(prefix="carrack-audit-bench-"))
    node = AnvilServer(name="anvil", state_dir=state, port=free_port(), persist=False)
    node.start()
    try:
        settings.CHAIN_RPC_URL = node.url
        client = Web3ChainClient(rpc_url=node.url, private_key=settings.CHAIN_PRIVATE_KEY, timeout=10.0)

        print("## 1. gas", flush=True)
        address = deploy(client, state / "deployments-gas.json")
        gas_rows, gas_info = gas_part(client, address, node.url, args.singles)
        gas_table = table(["anchor transaction", "events", "gasUsed", "gas/event", "calldata bytes",
                           "gas/event vs 1 tx per event"], gas_rows)
        other_table = table(["other transaction", "gasUsed"], gas_info["other"])
        print(gas_table, flush=True)
        print(other_table, flush=True)

        print("\n## 3. proofs", flush=True)
        proof_rows = proofs_part(client, node.url, gas_info)
        proof_table = table(["batch", "path hashes", "JSON bytes", "JSON bytes, hashes only",
                             "binary bytes", "binary, hashes only", "event bytes",
                             "Merkle path µs", "verify_offline µs", "verify_proof (RPC) ms",
                             "carrack-verify process ms", "build proof ms"], proof_rows)
        print(proof_table, flush=True)

        print("\n## 2. sustained anchoring", flush=True)
        reference = raw_insert_rate(args.database_url, args.reference_seconds, args.producers)
        print(f"  raw INSERT reference: {reference:,.0f} events/s", flush=True)
        append_rate = append_only_rate(args.reference_seconds, args.producers)
        print(f"  audit_append alone:   {append_rate:,.0f} events/s", flush=True)
        # the entries appended above are anchored too: a backlog at t=0, drained first
        settings.CHAIN_DEPLOYMENTS_FILE = state / "deployments-sustained.json"
        deploy(client, settings.CHAIN_DEPLOYMENTS_FILE)
        from ledger.anchoring import anchor_tick

        settings.AUDIT_ANCHOR_MAX_ENTRIES, settings.AUDIT_ANCHOR_INTERVAL_SECONDS = 5000, 0
        t0 = time.perf_counter()
        while anchor_tick(client=client).created:
            pass
        backlog_seconds = time.perf_counter() - t0
        from ledger.models import AuditEntry
        pre = AuditEntry.objects.count()
        print(f"  pre-existing {pre:,} entries anchored in {backlog_seconds:.1f} s "
              f"({pre / backlog_seconds:,.0f} events/s catch-up)", flush=True)
        result = sustained_part(client, node.url, args.seconds, args.rate, pre, args.producers,
                                args.per_commit)
        appended = result["appended"]
        lags = result["lags"]
        summary = [
            ["producer target", f"{args.rate:,.0f} events/s"],
            [f"appended (audit_append, {args.producers} thread(s), {args.per_commit} per commit, with anchoring running)",
             f"{appended:,} in {result['load_seconds']:.1f} s = {appended / result['load_seconds']:,.0f} events/s"],
            ["anchored during the load window",
             f"{result['anchored_in_window']:,} by t={result['window_end']:.1f} s = "
             f"{result['anchored_in_window'] / max(result['window_end'], 1e-9):,.0f} events/s"],
            ["drain after the producer stopped", f"{result['drain_seconds']:.1f} s"],
            ["batches", f"{result['batches']} (size median {statistics.median(result['sizes']):,.0f}, "
                        f"max {max(result['sizes']):,})"],
            ["gas per batch (median)", f"{statistics.median(result['gas']):,.0f}"],
            ["lag recorded → confirmed p50 / p95 / max",
             f"{percentile(lags, 0.5):.2f} s / {percentile(lags, 0.95):.2f} s / {max(lags):.2f} s"],
            [f"raw INSERT reference (same rows, plain tables, 1 commit/event, {args.producers} thread(s))",
             f"{reference:,.0f} events/s"],
            [f"audit_append alone (no anchoring, {args.producers} thread(s))", f"{append_rate:,.0f} events/s"],
            ["appended / raw INSERT", f"{appended / result['load_seconds'] / reference:.2f}"],
        ]
        sustained_table = table(["sustained anchoring", "value"], summary)
        every = max(1, len(result["samples"]) // 12)
        backlog_rows = [[f"{t:.0f}", a, x, a - x, f"{tick:.2f}"]
                        for t, a, x, tick in result["samples"][::every] + result["samples"][-1:][:(len(result["samples"]) - 1) % every]]
        backlog_table = table(["t s", "appended", "anchored", "backlog", "tick s"], backlog_rows)
        print(sustained_table, flush=True)
        print(backlog_table, flush=True)
    finally:
        node.stop()

    machine = f"{os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}"
    print("\n---\nmachine:", machine)
    tables = [gas_table, other_table, proof_table, sustained_table, backlog_table]
    Path(state / "tables.md").write_text("\n\n".join(tables))
    print(f"tables also in {state / 'tables.md'}")


if __name__ == "__main__":
    main()
