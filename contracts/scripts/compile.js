#!/usr/bin/env node
// Compiles every top-level *.sol in contracts/ with solc-js and writes
// build/<ContractName>.json = {contractName, abi, bytecode, deployedBytecode, compiler}.
// Exits non-zero (printing the compiler's messages) on any compilation error.
'use strict';

const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const BUILD = path.join(ROOT, 'build');
const solc = require(require.resolve('solc', { paths: [ROOT] }));

const EVM_VERSION = 'cancun';
const OPTIMIZER = { enabled: true, runs: 200 };

function findImports(importPath) {
  const candidates = path.isAbsolute(importPath)
    ? [importPath]
    : [path.join(ROOT, importPath), path.join(ROOT, 'node_modules', importPath)];
  for (const c of candidates) {
    if (fs.existsSync(c) && fs.statSync(c).isFile()) return { contents: fs.readFileSync(c, 'utf8') };
  }
  return { error: `File not found: ${importPath}` };
}

function main() {
  const files = fs.readdirSync(ROOT).filter((f) => f.endsWith('.sol')).sort();
  if (files.length === 0) {
    console.error('compile: no top-level .sol files in', ROOT);
    process.exit(1);
  }
  const sources = {};
  for (const f of files) sources[f] = { content: fs.readFileSync(path.join(ROOT, f), 'utf8') };

  const input = {
    language: 'Solidity',
    sources,
    settings: {
      optimizer: OPTIMIZER,
      evmVersion: EVM_VERSION,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const messages = output.errors || [];
  const errors = messages.filter((m) => m.severity === 'error');
  for (const m of messages) console.error(m.formattedMessage || m.message);
  if (errors.length) {
    console.error(`compile: ${errors.length} error(s)`);
    process.exit(1);
  }

  fs.mkdirSync(BUILD, { recursive: true });
  const compiler = { name: 'solc-js', version: solc.version(), optimizer: OPTIMIZER, evmVersion: EVM_VERSION };
  let written = 0;
  for (const f of files) {
    for (const [contractName, c] of Object.entries(output.contracts[f] || {})) {
      const artifact = {
        contractName,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        compiler,
      };
      fs.writeFileSync(path.join(BUILD, `${contractName}.json`), JSON.stringify(artifact, null, 2) + '\n');
      console.log(`compile: ${f}:${contractName} -> build/${contractName}.json`);
      written++;
    }
  }
  if (!written) { console.error('compile: no contracts produced'); process.exit(1); }
}

main();
