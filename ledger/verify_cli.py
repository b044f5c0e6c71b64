"""Where ``carrack-verify`` scripts installed before ``ledger.verify`` look for ``main``.

A console script keeps the entry point it was installed with; this keeps those working until
the next ``pip install -e .`` writes ``ledger.verify.cli:main``. Nothing else imports it.
"""

from ledger.verify.cli import main

__all__ = ["main"]
