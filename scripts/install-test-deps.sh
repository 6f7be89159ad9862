#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain: the benchmark peers' npm
# dependencies (bench/install-peers.sh), then, from Debian packages:
# - `prometheus`: `promtool`, which checks the /metrics exposition and the rules in dashboards/,
#   and the `prometheus` server binary, for the tests that run their own Prometheus (on a port of
#   their own) against a real gateway to exercise every dashboard and rule query;
# - `chromium` and `chromium-driver`: headless Chromium and its WebDriver (`chromedriver`), for
#   the operator console's browser tests (tests/it/console.rs), which start their own driver on a
#   free loopback port;
# - `redis-server`: the fleet tests (tests/it/fleet.rs) start their own redis-server on a free
#   loopback port, without persistence, for the gateways' Redis backplane;
# - `systemd`: `systemd-analyze`, which checks the example unit examples/switchyard.service
#   (`systemd-analyze verify` reads unit files; it needs no running systemd).
# Idempotent: does nothing when every binary is already on PATH, and installs only the packages
# of the missing ones. Needs root (or everything installed); never starts a service.
set -euo pipefail

# The load generator's end-to-end tests (bench/tests) run the Node and Bun peers it is compared
# with; their npm dependencies come from pinned locks (idempotent, ~1 s when already installed).
"$(dirname "${BASH_SOURCE[0]}")/../bench/install-peers.sh"

# binary:package, one per binary the tests run.
needed=(promtool:prometheus prometheus:prometheus chromium:chromium chromedriver:chromium-driver systemd-analyze:systemd redis-server:redis-server)

missing=()
packages=()
for entry in "${needed[@]}"; do
    binary=${entry%%:*}
    package=${entry#*:}
    if ! command -v "$binary" >/dev/null 2>&1; then
        missing+=("$binary")
        if [[ " ${packages[*]} " != *" $package "* ]]; then
            packages+=("$package")
        fi
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi

if [[ "$EUID" -ne 0 ]]; then
    echo "error: ${missing[*]} not on PATH and installing needs root." >&2
    echo "       Run as root: scripts/install-test-deps.sh" >&2
    echo "       or install it yourself: apt-get install --no-install-recommends ${packages[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} not on PATH and there is no apt-get to install with;" >&2
    echo "       install them yourself (Debian packages: ${packages[*]})." >&2
    exit 1
fi

# The packages' maintainer scripts would start the prometheus and redis-server services. There is
# no init system in CI and the tests start their own instances, never the system services, so
# forbid service starts for the install's duration (policy-rc.d exit 101 = "action forbidden"), unless a policy is
# already in place.
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

echo "installing ${missing[*]} (Debian packages ${packages[*]})..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# A package may be installed with a binary missing (deleted by hand, a partial install):
# --reinstall puts every file back; on a fresh system it is an ordinary install.
apt-get install -y -qq --no-install-recommends --reinstall "${packages[@]}" >/dev/null

for binary in "${missing[@]}"; do
    if ! command -v "$binary" >/dev/null 2>&1; then
        echo "error: installed ${packages[*]} but $binary is still not on PATH" >&2
        exit 1
    fi
    echo "$binary installed: $("$binary" --version 2>&1 | head -n 1)" >&2
done
