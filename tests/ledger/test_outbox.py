"""The shared signed-transaction outbox (``ledger.chain.outbox``): real PostgreSQL, real anvil.

A purpose of the tests' own (``Recorder``) anchors seq n..n on AuditAnchor for its n-th row
and writes down every hook the outbox runs. Its rows are ``ConsentChainTx`` rows (the outbox
needs a table, and that one allows rows queued before they are signed). Each test runs an
anvil of its own, with mining switched off where a transaction must wait; time is passed as
``now``, so resend and replacement timeouts need no sleeping.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection
from django.utils import timezone
from eth_account import Account

from ledger.chain import LedgerUnavailable, load_artifact, outbox
from ledger.chain.outbox import Call
from ledger.chain.web3_client import Web3ChainClient
from ledger.models import ConsentChainTx, ConsentToken

from tests.ledger.conftest import deploy_anchor

pytestmark = [pytest.mark.chain, pytest.mark.django_db(transaction=True)]

RESEND = 30
LOCK = 0x434152544F555458  # "CARTOUTX": the tests' purpose's lock


def rpc(url: str, method: str, *params):
    answer = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
                           timeout=5).json()
    assert "error" not in answer, answer
    return answer["result"]


def root_of(seq: int) -> bytes:
    return hashlib.sha256(b"outbox test leaf %d" % seq).digest()


class Recorder:
    """Anchor seq n..n for the row whose token has serial n; every hook call is written down."""

    resend_seconds = RESEND
    replace_after: int | None = 2

    def __init__(self, address: str, *, confirmations: int = 1) -> None:
        self.address, self.confirmations = address, confirmations
        self.artifact = load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR)
        self.calls: list[tuple] = []

    def call(self, tx: ConsentChainTx) -> Call:
        seq = tx.token.serial
        return Call(self.artifact, self.address, "anchor", (seq, seq, root_of(seq)))

    def mined(self, client, tx: ConsentChainTx, receipt: dict, now) -> bool:
        if outbox.depth(client, receipt) < self.confirmations:
            self.calls.append(("shallow", tx.pk))
            return False
        tx.status, tx.block_number, tx.block_hash = "mined", receipt["block_number"], receipt["block_hash"]
        tx.save(update_fields=["status", "block_number", "block_hash"])
        self.calls.append(("mined", tx.pk, receipt["transaction"]))
        return True

    def nonce_taken(self, client, tx: ConsentChainTx, now) -> bool:
        self.calls.append(("nonce_taken", tx.pk, tx.nonce))
        outbox.unsign(tx, "queued")  # the work is not done: sign it again at a free nonce
        return True

    def sent(self, tx: ConsentChainTx, *, again: bool) -> None:
        self.calls.append(("resent" if again else "sent", tx.pk, tx.tx_hash))

    def replaced(self, tx: ConsentChainTx, old_hash: str) -> None:
        self.calls.append(("replaced", tx.pk, old_hash, tx.tx_hash))

    def kinds(self) -> list[str]:
        return [call[0] for call in self.calls]


def queue(count: int) -> list[ConsentChainTx]:
    """``count`` queued rows, the n-th anchoring seq n."""
    rows = []
    for serial in range(1, count + 1):
        token = ConsentToken.objects.create(
            patient_id="p", consent_id="c", consent_version=1, consent_hash=b"\x00" * 32,
            grantee="Organization/b", purpose="TREAT", serial=serial, pseudonym=b"\x00" * 32, terms=b"\x00" * 32)
        rows.append(ConsentChainTx.objects.create(token=token, action="grant"))
    return rows


def tick(client, purpose: Recorder, now) -> bool:
    """What a purpose's beat task does: single-flight, sign and send the queue, follow the sent."""
    with outbox.signer_flight(LOCK, client.address) as mine:
        if not mine:
            return False
        chain_id = client.chain_id()
        for tx in ConsentChainTx.objects.filter(status="queued").select_related("token").order_by("id"):
            tx.chain_id, tx.contract = chain_id, purpose.address
            outbox.sign_and_persist(client, purpose, tx, nonce=outbox.next_nonce(client, ConsentChainTx, chain_id),
                                    fees=client.fee_suggestion())
            outbox.send(client, purpose, tx, now)
        for tx in ConsentChainTx.objects.filter(status="sent").select_related("token").order_by("nonce"):
            outbox.follow(client, purpose, tx, now)
        return True


def row(tx: ConsentChainTx) -> ConsentChainTx:
    return ConsentChainTx.objects.select_related("token").get(pk=tx.pk)


@pytest.fixture
def anchor(own_chain) -> str:
    return deploy_anchor(own_chain, settings.CHAIN_DEPLOYMENTS_FILE)


@pytest.fixture
def manual_mining(anvil_node, own_chain):
    rpc(anvil_node.url, "evm_setAutomine", False)
    return anvil_node


def anchored(client, address: str) -> int:
    return client.call(load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR), address, "lastAnchored",
                       client.address)


# --- sign, persist, then send --------------------------------------------------------------------

class Crash(Exception):
    """The worker dies between committing the signed bytes and broadcasting them."""


class DiesAtSend(Web3ChainClient):
    def send_raw(self, raw: bytes) -> str:
        self.persisted = list(ConsentChainTx.objects.values_list("raw_tx", "tx_hash", "status", "attempts"))
        self.in_transaction = connection.in_atomic_block
        raise Crash


def test_a_crash_between_sign_and_send_resends_the_same_bytes(anvil_node, own_chain, anchor):
    dying = DiesAtSend(rpc_url=anvil_node.url, private_key=settings.CHAIN_PRIVATE_KEY, timeout=1.0)
    [tx] = queue(1)
    nonce = own_chain.nonce(own_chain.address, pending=True)

    with pytest.raises(Crash):
        tick(dying, Recorder(anchor), timezone.now())

    signed = row(tx)
    assert dying.persisted == [(signed.raw_tx, signed.tx_hash, "sent", 0)] and dying.in_transaction is False
    assert (signed.nonce, signed.attempts, signed.sent_at) == (nonce, 0, None)
    assert own_chain.receipt(signed.tx_hash) is None
    assert own_chain.nonce(own_chain.address, pending=True) == nonce  # nothing reached the node

    purpose = Recorder(anchor)
    tick(own_chain, purpose, timezone.now())  # the next worker: never broadcast, so sent at once
    tick(own_chain, purpose, timezone.now())

    again = row(tx)
    assert purpose.calls == [("resent", tx.pk, signed.tx_hash), ("mined", tx.pk, signed.tx_hash)]
    assert (bytes(again.raw_tx), again.tx_hash, again.nonce, again.status) == (
        bytes(signed.raw_tx), signed.tx_hash, nonce, "mined")
    assert anchored(own_chain, anchor) == 1


def test_a_node_down_at_send_loses_nothing(anvil_node, own_chain, anchor):
    [tx] = queue(1)
    anvil_node.stop()

    with pytest.raises(LedgerUnavailable):
        tick(own_chain, Recorder(anchor), timezone.now())
    assert ConsentChainTx.objects.filter(status="queued").count() == 1  # signing needs the node too

    anvil_node.start()
    purpose = Recorder(anchor)
    tick(own_chain, purpose, timezone.now())

    assert purpose.kinds() == ["sent", "mined"] and row(tx).status == "mined"


# --- resend and replacement ---------------------------------------------------------------------

def test_a_dropped_transaction_is_resent_with_the_same_bytes_after_the_timeout(manual_mining, own_chain, anchor):
    node, t0, purpose = manual_mining, timezone.now(), Recorder(anchor)
    [tx] = queue(1)
    tick(own_chain, purpose, t0)
    sent = row(tx)
    rpc(node.url, "anvil_dropTransaction", sent.tx_hash)

    tick(own_chain, purpose, t0 + timedelta(seconds=RESEND - 1))
    assert purpose.kinds() == ["sent"]
    tick(own_chain, purpose, t0 + timedelta(seconds=RESEND + 1))

    resent = row(tx)
    assert purpose.kinds() == ["sent", "resent"]
    assert (bytes(resent.raw_tx), resent.tx_hash, resent.attempts) == (bytes(sent.raw_tx), sent.tx_hash, 2)
    assert rpc(node.url, "eth_getTransactionByHash", sent.tx_hash) is not None
    rpc(node.url, "evm_mine")
    tick(own_chain, purpose, t0 + timedelta(seconds=RESEND + 2))
    assert purpose.calls[-1] == ("mined", tx.pk, sent.tx_hash)


def test_a_stuck_transaction_is_replaced_with_higher_fees_at_the_same_nonce(manual_mining, own_chain, anchor):
    node, t0, purpose = manual_mining, timezone.now(), Recorder(anchor)
    [tx] = queue(1)
    tick(own_chain, purpose, t0)
    stuck = row(tx)
    rpc(node.url, "anvil_dropTransaction", stuck.tx_hash)  # never mined: only a re-signing helps

    for k in (1, 2):
        tick(own_chain, purpose, t0 + timedelta(seconds=(RESEND + 1) * k))

    new = row(tx)
    assert purpose.kinds() == ["sent", "resent", "replaced", "sent"]
    assert purpose.calls[2] == ("replaced", tx.pk, stuck.tx_hash, new.tx_hash)
    assert new.nonce == stuck.nonce and new.tx_hash != stuck.tx_hash
    assert new.max_fee_per_gas * 8 >= stuck.max_fee_per_gas * 9
    assert new.max_priority_fee_per_gas * 8 >= stuck.max_priority_fee_per_gas * 9
    assert (new.attempts, new.replaced_tx_hashes) == (1, [stuck.tx_hash])
    rpc(node.url, "evm_mine")
    tick(own_chain, purpose, t0 + timedelta(seconds=200))
    assert purpose.calls[-1] == ("mined", tx.pk, new.tx_hash)
    assert own_chain.receipt(stuck.tx_hash) is None and anchored(own_chain, anchor) == 1


def test_an_offer_below_the_base_fee_is_replaced_at_the_first_timeout(manual_mining, own_chain, anchor):
    node, t0, purpose = manual_mining, timezone.now(), Recorder(anchor)
    [tx] = queue(1)
    tick(own_chain, purpose, t0)
    offer = row(tx)
    rpc(node.url, "anvil_setNextBlockBaseFeePerGas", hex(int(offer.max_fee_per_gas) * 4))
    rpc(node.url, "evm_mine")  # a block the offer cannot enter
    assert own_chain.receipt(offer.tx_hash) is None and own_chain.base_fee() > offer.max_fee_per_gas

    tick(own_chain, purpose, t0 + timedelta(seconds=RESEND + 1))

    new = row(tx)
    assert purpose.kinds() == ["sent", "replaced", "sent"]  # one broadcast only, no resend first
    assert new.nonce == offer.nonce and new.max_fee_per_gas > own_chain.base_fee()
    rpc(node.url, "evm_mine")
    tick(own_chain, purpose, t0 + timedelta(seconds=RESEND + 2))
    assert purpose.calls[-1] == ("mined", tx.pk, new.tx_hash) and anchored(own_chain, anchor) == 1


# --- the nonce taken -----------------------------------------------------------------------------

def test_a_nonce_taken_by_another_transaction_runs_the_hook_and_the_work_is_queued_again(
        manual_mining, own_chain, anchor):
    node, t0, purpose = manual_mining, timezone.now(), Recorder(anchor)
    [tx] = queue(1)
    tick(own_chain, purpose, t0)
    ours = row(tx)
    rpc(node.url, "anvil_dropTransaction", ours.tx_hash)
    other = Account.from_key(settings.CHAIN_PRIVATE_KEY).sign_transaction({
        "to": own_chain.address, "value": 0, "gas": 21_000, "nonce": ours.nonce, "chainId": own_chain.chain_id(),
        "maxFeePerGas": int(ours.max_fee_per_gas), "maxPriorityFeePerGas": int(ours.max_priority_fee_per_gas)})
    own_chain.send_raw(bytes(other.raw_transaction))
    rpc(node.url, "evm_mine")

    tick(own_chain, purpose, t0 + timedelta(seconds=1))

    requeued = row(tx)
    assert purpose.calls[1] == ("nonce_taken", tx.pk, ours.nonce)
    assert (requeued.status, requeued.raw_tx, requeued.tx_hash, requeued.nonce) == ("queued", None, None, None)
    assert anchored(own_chain, anchor) == 0

    tick(own_chain, purpose, t0 + timedelta(seconds=2))  # signed again at the next free nonce
    rpc(node.url, "evm_mine")
    tick(own_chain, purpose, t0 + timedelta(seconds=3))

    done = row(tx)
    assert purpose.kinds() == ["sent", "nonce_taken", "sent", "mined"]
    assert (done.status, done.nonce) == ("mined", ours.nonce + 1) and anchored(own_chain, anchor) == 1


# --- confirmation and reorganization ------------------------------------------------------------

def test_confirmation_is_followed_to_the_configured_depth_and_a_reorg_is_seen(anvil_node, own_chain, anchor):
    purpose = Recorder(anchor, confirmations=2)
    [tx] = queue(1)
    snapshot = rpc(anvil_node.url, "evm_snapshot")

    tick(own_chain, purpose, timezone.now())
    assert purpose.kinds() == ["sent", "shallow"] and row(tx).status == "sent"
    rpc(anvil_node.url, "evm_mine")
    tick(own_chain, purpose, timezone.now())

    mined = row(tx)
    assert purpose.kinds() == ["sent", "shallow", "mined"] and mined.status == "mined"
    assert (mined.block_number, mined.block_hash) == (own_chain.receipt(mined.tx_hash)["block_number"],
                                                      own_chain.receipt(mined.tx_hash)["block_hash"])
    assert outbox.recheck(own_chain, mined)[0] == outbox.KEPT

    rpc(anvil_node.url, "evm_revert", snapshot)
    assert outbox.recheck(own_chain, mined) == (outbox.LOST, None)
    rpc(anvil_node.url, "evm_mine")
    own_chain.send_raw(bytes(mined.raw_tx))  # the same bytes, mined again one block later
    where, receipt = outbox.recheck(own_chain, mined)
    assert where == outbox.MOVED and receipt["block_number"] == mined.block_number + 1


# --- two workers ---------------------------------------------------------------------------------

class WaitsForTheOtherAtSigning(Web3ChainClient):
    """The real client; its first signing waits (2 s at most) for the other worker's first signing.

    Without single flight both workers would sign the first row at once (and, each offering
    its own tip, differently); with it the other one never signs, and the wait runs out.
    """

    def __init__(self, meeting: threading.Barrier, tip: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.meeting, self.met, self.tip = meeting, False, tip

    def fee_suggestion(self) -> tuple[int, int]:
        max_fee, priority = super().fee_suggestion()
        return max_fee + self.tip, priority + self.tip

    def signed_call(self, *args, **kwargs):
        if not self.met:
            self.met = True
            try:
                self.meeting.wait()
            except threading.BrokenBarrierError:
                pass
        return super().signed_call(*args, **kwargs)


def test_two_concurrent_workers_sign_each_row_once_with_contiguous_nonces(anvil_node, own_chain, anchor):
    rows = queue(8)
    first_nonce = own_chain.nonce(own_chain.address, pending=True)
    start, meeting, errors, ran = threading.Barrier(2), threading.Barrier(2, timeout=2), [], []

    def worker(tip: int) -> None:
        client = WaitsForTheOtherAtSigning(meeting, tip, rpc_url=anvil_node.url,
                                           private_key=settings.CHAIN_PRIVATE_KEY, timeout=2.0)
        purpose = Recorder(anchor)
        try:
            start.wait()
            for _ in range(50):
                ran.append(tick(client, purpose, timezone.now()))
                if not ConsentChainTx.objects.exclude(status="mined").exists():
                    break
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(tip,)) for tip in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert errors == [] and True in ran and False in ran  # one worked, the other found it busy
    done = list(ConsentChainTx.objects.order_by("token__serial"))
    assert [tx.status for tx in done] == ["mined"] * len(rows)
    assert [tx.nonce for tx in done] == list(range(first_nonce, first_nonce + len(rows)))
    assert all(tx.attempts == 1 and tx.replaced_tx_hashes == [] for tx in done)
    events = own_chain.events(load_artifact("AuditAnchor", settings.CONTRACTS_BUILD_DIR), anchor, "Anchored",
                              member=own_chain.address)
    assert [(e["args"]["firstSeq"], e["transaction"]) for e in events] == [
        (n, tx.tx_hash) for n, tx in enumerate(done, start=1)]
    assert own_chain.nonce(own_chain.address, pending=True) == first_nonce + len(rows)


def test_a_tick_is_busy_while_another_worker_holds_the_signing_key(own_chain, anchor):
    queue(1)
    with psycopg.connect(**connection.get_connection_params()) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [outbox.signer_lock(own_chain.address)])

        assert tick(own_chain, Recorder(anchor), timezone.now()) is False

    assert ConsentChainTx.objects.get().status == "queued"
