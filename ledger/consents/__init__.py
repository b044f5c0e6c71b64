"""Consent tokens: from FHIR Consents to tokens on chain, a mirror for fast checks, and proofs.

- ``rules``: the plain values ``ehr`` hands over (``ConsentRule``, ``ConsentVersion``); the write
  side is ``ledger.services.consent_tokens``, run in the Consent's own transaction.
- ``check``: the one consent check every caller uses (FHIR access, exports, AI training).
- ``sync``: the beat task's outbox sender and event listener.
- ``reconcile``: mirror against chain.
- ``proofs``: proof documents for ``GET /api/ledger/consents/{id}/proof`` (pure part: ``ledger.verify``).
"""
