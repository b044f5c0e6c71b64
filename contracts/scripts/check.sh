#!/usr/bin/env bash
# Contracts gate: Foundry tests (unit + fuzz) then Slither (fails on medium+).
# Needs: `npm ci` done in contracts/ (forge + solc-js from node_modules) and
# `slither` (slither-analyzer==0.11.6) on PATH, e.g. from the caller's venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# forge/anvil come from node_modules; slither's Foundry platform calls `forge`
# from PATH, and foundry.toml points forge at ./bin/solc (solc-js, offline).
export PATH="$PWD/node_modules/.bin:$PATH"

node_modules/.bin/forge test --offline --use ./bin/solc

SLITHER="${SLITHER:-slither}"
if ! command -v "$SLITHER" >/dev/null 2>&1; then
    echo "check.sh: slither not found (set SLITHER or pip install slither-analyzer==0.11.6)" >&2
    exit 1
fi
# `slither .` detects foundry.toml and builds through `forge build` (which uses
# ./bin/solc); tests, forge-std and OpenZeppelin are excluded from the results.
"$SLITHER" . --fail-medium --filter-paths "node_modules|test" --exclude-dependencies
