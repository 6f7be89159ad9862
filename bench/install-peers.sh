#!/usr/bin/env bash
# Installs the benchmark peers' dependencies from their pinned package-lock.json files, from the
# npm registry and nothing else: `ws` for the Node peer (bench/node) and the `bun` package for the
# Bun peer (bench/bun), which ships the Bun binary itself (node_modules/.bin/bun; its postinstall
# step only moves the binary out of the platform package, @oven/bun-linux-x64, that npm fetched).
# Needs Node.js 20+ and npm on PATH (the machine's). Idempotent: a peer whose node_modules was
# installed from the same lock is left alone. The end-to-end tests of bench/ run both peers.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

for tool in node npm; do
    command -v "$tool" >/dev/null 2>&1 \
        || { echo "error: $tool is not on PATH: the benchmark peers need Node.js 20+ and npm" >&2; exit 1; }
done

for peer in node bun; do
    stamp=$peer/node_modules/.installed-from-lock
    if cmp -s "$peer/package-lock.json" "$stamp"; then
        continue
    fi
    echo "installing the $peer peer's dependencies (npm ci in bench/$peer)..." >&2
    (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$peer/package-lock.json" "$stamp"
done

# The binary must run here, not merely be present.
want=$(node -p 'require("./bun/package.json").dependencies.bun')
got=$(bun/node_modules/.bin/bun --version) \
    || { echo "error: bench/bun/node_modules/.bin/bun does not run" >&2; exit 1; }
[[ "$got" == "$want" ]] \
    || { echo "error: bench/bun/node_modules/.bin/bun is $got, the lock pins $want" >&2; exit 1; }
echo "benchmark peers installed: node $(node --version), ws $(node -p 'require("./node/node_modules/ws/package.json").version'), bun $got" >&2
