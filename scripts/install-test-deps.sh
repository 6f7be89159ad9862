#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: `promtool` (Debian's `prometheus`
# package), which checks the /metrics exposition. Idempotent: does nothing when promtool is
# already on PATH. Needs root (or an existing promtool); never starts the prometheus service.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi

if [[ "$EUID" -ne 0 ]]; then
    echo "error: promtool is not on PATH and installing it needs root." >&2
    echo "       Run as root: scripts/install-test-deps.sh" >&2
    echo "       or install it yourself: apt-get install --no-install-recommends prometheus" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: promtool is not on PATH and there is no apt-get to install it with;" >&2
    echo "       install promtool (part of Prometheus) yourself." >&2
    exit 1
fi

# The package's maintainer scripts would start the prometheus service. There is no init system in
# CI and the tests start no Prometheus daemon, so forbid service starts for the install's duration
# (policy-rc.d exit 101 = "action forbidden"), unless a policy is already in place.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\n# Written by switchyard scripts/install-test-deps.sh for one install.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    created_policy=true
fi
cleanup() {
    if [[ "$created_policy" == true ]]; then
        rm -f "$policy"
    fi
}
trap cleanup EXIT

echo "installing promtool (Debian package prometheus)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

if ! command -v promtool >/dev/null 2>&1; then
    echo "error: installed the prometheus package but promtool is still not on PATH" >&2
    exit 1
fi
echo "promtool installed: $(promtool --version 2>&1 | head -n 1)" >&2
