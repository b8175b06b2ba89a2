#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs the
# format check, clippy with warnings as errors, and every test of the workspace (debug build).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== %s\n' "$*"; }

step "dependencies"
# Ciw (PyPI): the independent simulator the engine is cross-checked against.
if ! python3 -c "import ciw" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "ciw==3.*"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked
