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
# grpcio, grpcio-tools and grpcio-reflection (PyPI): tests/python/auth_client.py, the
# AuthService from a Python client, and tests/python/reflection_client.py, server reflection.
if ! python3 -c "import grpc, grpc_tools, grpc_reflection" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "grpcio==1.*" "grpcio-tools==1.*" \
    "grpcio-reflection==1.*"
fi
# opentelemetry-proto (PyPI): tests/python/otlp_receiver.py, the OTLP/HTTP receiver that
# services/server/tests/otel.rs exports spans to.
if ! python3 -c "import opentelemetry.proto.collector.trace.v1" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "opentelemetry-proto==1.*"
fi
# kubernetes-validate (PyPI, with its bundled schemas): services/server/tests/deploy.rs checks
# deploy/k8s/ with it.
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.*"
fi
# Schemathesis (PyPI): tests/openapi/run.sh, the running server against docs/openapi.json.
if ! python3 -c "import schemathesis" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==4.*"
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# redis-server and PostgreSQL (Debian packages): the tests start their own servers on free
# loopback ports, as the postgres account when run as root, and stop them when they finish.
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
# stress-ng (Debian package): the suite must also pass on a busy machine, e.g. beside
# `stress-ng --cpu 2`; no test starts it.
command -v stress-ng >/dev/null || missing+=(stress-ng)
# HAProxy (Debian package): the load-balancer tier of the cluster test (config/haproxy.cfg).
command -v haproxy >/dev/null || missing+=(haproxy)
# systemd-analyze (Debian's systemd): deploy.rs verifies the units in deploy/systemd/.
command -v systemd-analyze >/dev/null || missing+=(systemd)
# Chromium and Node (Debian packages): the console test drives the page at / in a real browser
# through playwright-core (npm, below), which uses this Chromium and downloads no browser.
command -v chromium >/dev/null || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# Prometheus (Debian package, with promtool): services/server/tests/prometheus.rs checks and
# unit-tests config/prometheus/ and runs a Prometheus against sdsim.
command -v prometheus >/dev/null && command -v promtool >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages start system-wide instances on the default ports; the tests use their own.
  sudo_if_needed service redis-server stop >/dev/null 2>&1 || true
  sudo_if_needed service postgresql stop >/dev/null 2>&1 || true
  sudo_if_needed service haproxy stop >/dev/null 2>&1 || true
  sudo_if_needed service prometheus stop >/dev/null 2>&1 || true
  sudo_if_needed service prometheus-node-exporter stop >/dev/null 2>&1 || true
fi

# A one-shot build gains nothing from incremental state, which roughly doubles the target's size.
export CARGO_INCREMENTAL=0

step "cargo fmt --check"
cargo fmt --all -- --check
# The libFuzzer targets (fuzz/ is its own workspace; their checks, fuzz/checks, are a member).
rustfmt --check --edition 2021 fuzz/fuzz_targets/*.rs

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "schemathesis against docs/openapi.json"
tests/openapi/run.sh

step "console in a browser (tests/console)"
# playwright-core at the version tests/console/package-lock.json pins; the test starts the
# sdsim binary `cargo test` built on a free loopback port, drives Chromium through the page,
# saves a screenshot of each step under target/console-shots/ and stops the server.
npm ci --prefix tests/console --no-audit --no-fund --silent
node tests/console/console.spec.mjs
