#!/usr/bin/env bash
# The test command: installs what the integration tests start (Debian's
# redis-server and redis-tools, and the client libraries tests/clients.rs
# drives: redis-py from PyPI, ioredis and node-redis from npm) if it is
# missing, then runs every test of the workspace. Exits non-zero on any
# failure.
#
#   bash scripts/test.sh                  # install if missing, then test
#   bash scripts/test.sh --install-deps   # only install (used by .ci/run and demo.sh)
#   bash scripts/test.sh -- --nocapture   # extra arguments go to the test binaries
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf 'test.sh: %s\n' "$*" >&2; }

# A root shell runs apt-get itself; anyone else needs sudo.
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        exit 1
    fi
}

# The client libraries tests/clients.rs runs through attache: redis-py
# (PyPI) and ioredis + node-redis (npm, pinned by tests/clients/package-lock.json).
install_client_libraries() {
    if ! command -v python3 >/dev/null; then
        log "missing python3: install Python 3 (with pip) for the redis-py client tests"
        exit 1
    fi
    if ! python3 -c 'import redis' 2>/dev/null; then
        log "installing redis-py (python3 -m pip install 'redis>=5')"
        python3 -m pip install --quiet 'redis>=5' || {
            log "pip failed to install redis-py"
            exit 1
        }
    fi
    if ! command -v npm >/dev/null; then
        log "missing node/npm: install Node.js 20+ (with npm) for the ioredis and node-redis client tests"
        exit 1
    fi
    if [[ ! -d tests/clients/node_modules ]]; then
        log "installing ioredis and node-redis (npm ci --prefix tests/clients)"
        npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error || {
            log "npm ci failed"
            exit 1
        }
    fi
}

install_deps() {
    install_client_libraries
    local missing=()
    command -v redis-server >/dev/null || missing+=(redis-server)
    command -v redis-cli >/dev/null || missing+=(redis-tools)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    if ! command -v apt-get >/dev/null; then
        log "missing ${missing[*]} and no apt-get: install Redis 6.2+ (redis-server, redis-cli) yourself"
        exit 1
    fi
    log "installing ${missing[*]}"
    # The tests and the demo start their own redis-server on free ports; the
    # packaged service would only take 6379. Keep apt from starting it
    # (invoke-rc.d honours policy-rc.d) unless a policy is already in place.
    local policy=/usr/sbin/policy-rc.d added_policy=
    if [[ ! -e $policy ]]; then
        trap "as_root rm -f $policy" EXIT
        as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
        added_policy=1
    fi
    local status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        status=$?
    if [[ -n $added_policy ]]; then
        as_root rm -f "$policy"
        trap - EXIT
    fi
    if [[ $status -ne 0 ]]; then
        log "apt-get failed (exit $status)"
        exit "$status"
    fi
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        log "installed ${missing[*]}, but redis-server or redis-cli is still not on PATH"
        exit 1
    fi
}

# rustup installs into ~/.cargo/bin, which a fresh login shell may not have.
if ! command -v cargo >/dev/null && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

if [[ ${1:-} == --install-deps ]]; then
    install_deps
    exit 0
fi
if [[ ${1:-} == -- ]]; then
    shift
fi

install_deps
if ! command -v cargo >/dev/null; then
    log "cargo not found: install Rust with https://rustup.rs (curl --proto '=https' -sSf https://sh.rustup.rs | sh)"
    exit 1
fi
log "redis: $(redis-server --version | cut -d' ' -f1-3)"
# One build, run once: incremental state would only add ~3 GB of disk.
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
exec cargo test --workspace --all-targets -- "$@"
