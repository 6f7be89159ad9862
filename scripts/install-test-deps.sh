#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from Debian's packages:
# - `prometheus`: `promtool`, which checks the /metrics exposition and the rules in dashboards/,
#   and the `prometheus` server binary, for the tests that run their own Prometheus (on a port of
#   their own) against a real gateway to exercise every dashboard and rule query;
# - `redis-server`: the fleet tests (tests/it/fleet.rs) start their own redis-server on a free
#   loopback port, without persistence, for the gateways' Redis backplane.
# Idempotent: does nothing when every binary is already on PATH. Needs root (or all installed);
# never starts the prometheus or redis-server service.
set -euo pipefail

# binary -> the Debian package that ships it
declare -A package_of=([promtool]=prometheus [prometheus]=prometheus [redis-server]=redis-server)
missing=()
packages=()
for binary in promtool prometheus redis-server; do
    if ! command -v "$binary" >/dev/null 2>&1; then
        missing+=("$binary")
        package="${package_of[$binary]}"
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
    echo "       or install them yourself: apt-get install --no-install-recommends ${packages[*]}" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} not on PATH and there is no apt-get to install with;" >&2
    echo "       install them yourself (Debian packages: ${packages[*]})." >&2
    exit 1
fi

# The packages' maintainer scripts would start the prometheus and redis-server services. There is
# no init system in CI and the tests start their own instances, never the system services, so
# forbid service starts
# for the install's duration (policy-rc.d exit 101 = "action forbidden"), unless a policy is
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

echo "installing ${missing[*]} (Debian packages: ${packages[*]})..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The package may be installed with a binary missing (deleted by hand, a partial install):
# --reinstall puts every file back; on a fresh system it is an ordinary install.
apt-get install -y -qq --no-install-recommends --reinstall "${packages[@]}" >/dev/null

for binary in "${missing[@]}"; do
    if ! command -v "$binary" >/dev/null 2>&1; then
        echo "error: installed ${package_of[$binary]} but $binary is still not on PATH" >&2
        exit 1
    fi
    echo "$binary installed: $("$binary" --version 2>&1 | head -n 1)" >&2
done
