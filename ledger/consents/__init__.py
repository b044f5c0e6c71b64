"""Consent tokens: from FHIR Consents to tokens on chain, a mirror for fast checks, and proofs.

- ``tokens``: the write side, run in the Consent's own transaction (revocations count at once).
- ``check``: the one consent check every caller uses (FHIR access, exports, AI training).
- ``sync``: the beat task's outbox sender and event listener.
- ``reconcile``: mirror against chain.
- ``proofs``: proof documents for ``GET /api/ledger/consents/{id}/proof``.
"""
