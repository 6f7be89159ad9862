#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script) and as the README tells
# developers to: installs the test dependencies, then formatting, lints, doc tests and every other
# test, over the whole workspace (the gateway and the load generator in bench/), against the
# committed Cargo.lock. Run from anywhere; it works from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "scripts/install-test-deps.sh"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

# Doc tests before nextest (which does not run them), so the suite's closing line is nextest's
# summary of every test it ran.
step "cargo test --workspace --doc"
cargo test --locked --workspace --doc

step "cargo nextest run --workspace"
cargo nextest run --locked --workspace --no-fail-fast
