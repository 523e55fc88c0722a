#!/usr/bin/env bash
# The whole test suite: formatting, lints, every Rust test (unit, integration, property, doc,
# CLI end-to-end), a check that the committed Python reference values still come out of
# their generator scripts, Schemathesis against the OpenAPI document, the API contract's
# conformance test, the dashboard in Chromium, and the firmware. Installs what it needs (a Python venv outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "servers and tools the tests use (Mosquitto, promtool)"
./scripts/services.sh

step "the Kafka-protocol broker the Kafka tests use (tansu, built once and cached)"
KAIABC_TANSU="$(./scripts/tansu.sh)"
export KAIABC_TANSU

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# --all-targets includes the criterion benches, which run each benchmark once as a smoke test
# (no timing is asserted anywhere).
step "cargo test (all crates, all targets incl. benches once, doc tests)"
cargo test --workspace --all-targets
cargo test --workspace --doc

step "cargo doc (no broken links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "Python reference values are reproducible (SciPy LSODA, astropy)"
py="$(./scripts/pyenv.sh)"
"$py" scripts/check_references.py

step "the API against its OpenAPI document (Schemathesis, a live kaiabc run)"
./scripts/schemathesis.sh

step "the API against the specification's contract (its example requests, every field)"
./scripts/contract.sh

step "the dashboard in a real browser (headless Chromium, WebDriver)"
./scripts/dashboard.sh

step "firmware on real interpreters (MicroPython Unix port, Lua 5.1 and 5.3)"
./firmware/test.sh

printf '\nall tests passed\n'
