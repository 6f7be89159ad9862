#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script) and as the README tells
# developers to: installs the test dependencies, then formatting, lints, doc tests and every other
# test. Run from anywhere; it works from the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "scripts/install-test-deps.sh"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

# Doc tests before nextest (which does not run them), so the suite's closing line is nextest's
# summary of every test it ran.
step "cargo test --doc"
cargo test --locked --doc

step "cargo nextest run"
cargo nextest run --locked --no-fail-fast
