"""The contracts' own gate, run as part of the suite: forge (unit + fuzz) then slither."""

from __future__ import annotations

import os
import re
import subprocess

from config.stack.services import CONTRACTS_DIR


def test_forge_tests_and_slither_pass():
    result = subprocess.run(["bash", str(CONTRACTS_DIR / "scripts" / "check.sh")],
                            capture_output=True, text=True, timeout=600, env=dict(os.environ))
    output = result.stdout + result.stderr

    assert result.returncode == 0, output[-4000:]
    passed = sum(int(n) for n in re.findall(r"(\d+) tests passed", output))
    assert passed >= 20, output[-4000:]
    fuzz_runs = [int(n) for n in re.findall(r"\(runs: (\d+)", output)]
    assert fuzz_runs and min(fuzz_runs) >= 256, output[-4000:]
    assert "0 result(s) found" in output, output[-4000:]
