"""The offline verifier: proof formats and their checks, with nothing but the proof and a chain RPC URL.

Pure: no Django, no DRF, no Celery, no web3, and nothing of the ledger's database code
(import-linter holds this). The node builds its proofs with these modules and
``carrack-verify`` (``cli``) checks them with the server switched off, so both sides
compute every byte the same way. Formats: docs/audit-ledger.md, docs/consent.md.

- ``merkle``: RFC 6962 trees; ``audit_format``: the audit log's hashes and canonical JSON.
- ``audit_proof``: the audit proof document; ``proof_binary``: the same as compact bytes.
- ``audit_check``: checking an audit proof (offline, then against the chain).
- ``consent_format``: the bytes of a consent token; ``consent_proofs``: its proof and check.
- ``rpc``: just enough JSON-RPC; ``errors``: ``ProofInvalid``.
"""
