#!/usr/bin/env bash
# Contracts gate: Foundry tests (unit + fuzz) then Slither (fails on medium+).
# Needs: `npm ci` done in contracts/ (forge + solc-js from node_modules) and
# `slither` (slither-analyzer==0.11.6) on PATH, e.g. from the caller's venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# forge and anvil come from node_modules; forge.toml points forge at ./bin/solc
# (solc-js, offline).
export PATH="$PWD/node_modules/.bin:$PATH"

# The Foundry config is forge.toml, not foundry.toml: with a foundry.toml beside the
# sources, Slither would build through forge and ignore --solc-standard-json.
export FOUNDRY_CONFIG="$PWD/forge.toml"
node_modules/.bin/forge test --root . --offline --use ./bin/solc

SLITHER="${SLITHER:-slither}"
if ! command -v "$SLITHER" >/dev/null 2>&1; then
    echo "check.sh: slither not found (set SLITHER or pip install slither-analyzer==0.11.6)" >&2
    exit 1
fi
# Slither compiles the top-level sources through the same solc-js wrapper, in Standard JSON.
"$SLITHER" . --solc ./bin/solc --solc-standard-json \
    --solc-remaps "@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/" \
    --exclude-dependencies --filter-paths "node_modules" --fail-medium
