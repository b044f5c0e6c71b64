"""The layers of docs/architecture.md hold: import-linter's contracts in pyproject.toml pass.

A new import that crosses a layer (ledger importing ehr, an app importing another app's
``api``, Django reaching the offline verifier) fails the suite here, with import-linter's
report naming the chain of imports.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept():
    lint = pathlib.Path(sys.executable).parent / "lint-imports"
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout
