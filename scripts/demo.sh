#!/usr/bin/env bash
# attache in five commands' time: builds attache, starts a throwaway upstream
# redis-server, puts attache in front of it on localhost and drives it with
# redis-cli, the way an app in the pod would.
#
#   bash scripts/demo.sh          # run the demo, then stop everything
#   bash scripts/demo.sh --keep   # leave attache and redis-server running
#
# Ports (all on 127.0.0.1), overridable when taken:
#   ATTACHE_DEMO_PORT=6379            attache's listener (what apps use)
#   ATTACHE_DEMO_UPSTREAM_PORT=6380   the upstream redis-server
#   ATTACHE_DEMO_ADMIN_PORT=9901      attache's admin listener
#
# On a fresh Debian machine (as root) it installs redis-server and
# redis-tools first (apt-get, only if missing). Rust must be installed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

KEEP=
case "${1:-}" in
    "") ;;
    --keep) KEEP=1 ;;
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "demo.sh: unknown argument '$1' (try --keep or --help)" >&2
        exit 2
        ;;
esac

PORT=${ATTACHE_DEMO_PORT:-6379}
UPSTREAM_PORT=${ATTACHE_DEMO_UPSTREAM_PORT:-6380}
ADMIN_PORT=${ATTACHE_DEMO_ADMIN_PORT:-9901}

if [[ -t 1 ]]; then
    step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
    step() { printf '\n==> %s\n' "$*"; }
fi
fail() {
    printf '\ndemo.sh: %s\n' "$*" >&2
    exit 1
}

for var in PORT UPSTREAM_PORT ADMIN_PORT; do
    [[ ${!var} =~ ^[0-9]+$ && ${!var} -ge 1 && ${!var} -le 65535 ]] ||
        fail "ATTACHE_DEMO_$var='${!var}' is not a port number"
done
[[ $PORT != "$UPSTREAM_PORT" && $PORT != "$ADMIN_PORT" && $UPSTREAM_PORT != "$ADMIN_PORT" ]] ||
    fail "ports must differ: attache $PORT, upstream $UPSTREAM_PORT, admin $ADMIN_PORT"

# --- dependencies -----------------------------------------------------------

step "checking dependencies"
bash scripts/test.sh --install-deps
if ! command -v cargo >/dev/null && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null ||
    fail "cargo not found: install Rust with https://rustup.rs (curl --proto '=https' -sSf https://sh.rustup.rs | sh)"
echo "redis-server, redis-cli and cargo are installed"

# --- ports --------------------------------------------------------------------

# True when something accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

taken=()
port_in_use "$PORT" && taken+=("$PORT (attache; set ATTACHE_DEMO_PORT)")
port_in_use "$UPSTREAM_PORT" && taken+=("$UPSTREAM_PORT (upstream; set ATTACHE_DEMO_UPSTREAM_PORT)")
port_in_use "$ADMIN_PORT" && taken+=("$ADMIN_PORT (admin; set ATTACHE_DEMO_ADMIN_PORT)")
if [[ ${#taken[@]} -gt 0 ]]; then
    printf 'demo.sh: port already in use on 127.0.0.1: %s\n' "${taken[@]}" >&2
    if command -v ss >/dev/null; then
        ss -ltnp 2>/dev/null | grep -E ":($PORT|$UPSTREAM_PORT|$ADMIN_PORT)\b" >&2 || true
    fi
    fail "stop what holds it, or pick free ports, e.g.
    ATTACHE_DEMO_PORT=16379 ATTACHE_DEMO_UPSTREAM_PORT=16380 ATTACHE_DEMO_ADMIN_PORT=19901 bash scripts/demo.sh"
fi

# --- build --------------------------------------------------------------------

step "building attache (cargo build --release; the first build takes a few minutes)"
cargo build --release --bin attache
ATTACHE=$PWD/target/release/attache

# --- start --------------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/attache-demo.XXXXXX")
REDIS_PID=
ATTACHE_PID=
FINISHED=

stop_all() {
    local pid
    for pid in $ATTACHE_PID $REDIS_PID; do
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

on_exit() {
    local status=$?
    if [[ -n $FINISHED && -n $KEEP ]]; then
        return
    fi
    if [[ $status -ne 0 ]]; then
        for f in "$WORK"/*.log; do
            [[ -s $f ]] || continue
            printf '\n--- last lines of %s ---\n' "$f" >&2
            tail -n 20 "$f" >&2
        done
    fi
    stop_all
    if [[ $status -eq 0 ]]; then
        rm -rf "$WORK"
        echo "stopped attache and redis-server"
    else
        echo "demo.sh: failed; stopped everything, logs kept in $WORK" >&2
    fi
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# With --keep, the servers must outlive this shell and its terminal.
detach=()
if [[ -n $KEEP ]] && command -v setsid >/dev/null; then
    detach=(setsid)
fi

# Polls until `redis-cli -p $1 PING` answers PONG, for at most 10 s, failing
# early if process $2 exits.
wait_for_pong() {
    local port=$1 pid=$2 what=$3
    local deadline=$((SECONDS + 10))
    until [[ $(redis-cli -p "$port" PING 2>/dev/null) == PONG ]]; do
        kill -0 "$pid" 2>/dev/null || fail "$what exited before answering on port $port"
        ((SECONDS < deadline)) || fail "$what did not answer PING on port $port within 10 s"
        sleep 0.05
    done
}

step "starting the upstream: redis-server on 127.0.0.1:$UPSTREAM_PORT"
"${detach[@]}" redis-server --port "$UPSTREAM_PORT" --bind 127.0.0.1 \
    --save '' --appendonly no --daemonize no --dir "$WORK" \
    </dev/null >"$WORK/redis-server.log" 2>&1 &
REDIS_PID=$!
wait_for_pong "$UPSTREAM_PORT" "$REDIS_PID" redis-server
echo "redis-server is up (pid $REDIS_PID)"

step "writing the demo config: $WORK/attache.toml"
cat >"$WORK/attache.toml" <<TOML
# attache demo: apps connect to 127.0.0.1:$PORT, attache forwards upstream.
[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[redis.demo]
listen = "127.0.0.1:$PORT"
servers = ["127.0.0.1:$UPSTREAM_PORT"]
timeout = "1s"
TOML
cat "$WORK/attache.toml"

step "attache check --config $WORK/attache.toml (validates and prints the effective config)"
# ATTACHE_DEMO_* are this script's knobs, not config keys: every ATTACHE_
# variable is a config override, and an unknown key is an error.
unset "${!ATTACHE_DEMO_@}"
"$ATTACHE" check --config "$WORK/attache.toml"

step "starting attache: 127.0.0.1:$PORT -> 127.0.0.1:$UPSTREAM_PORT"
"${detach[@]}" "$ATTACHE" run --config "$WORK/attache.toml" \
    </dev/null >"$WORK/attache.log" 2>&1 &
ATTACHE_PID=$!
wait_for_pong "$PORT" "$ATTACHE_PID" attache
echo "attache is up (pid $ATTACHE_PID)"

# --- the demo -------------------------------------------------------------------

# Prints the command line, runs it, and checks its output matches $expect
# (an extended regex) when one is set.
expect=
show() {
    printf '\n$ %s\n' "$*"
    local out
    out=$(eval "$@" 2>&1) || fail "'$*' failed: $out"
    printf '%s\n' "$out"
    if [[ -n $expect ]] && ! grep -Eq -- "$expect" <<<"$out"; then
        fail "'$*': expected output matching /$expect/"
    fi
    expect=
}

step "talking to attache on 127.0.0.1:$PORT with redis-cli, as an app would"
expect='^PONG$' show redis-cli -p "$PORT" PING
expect='^OK$' show redis-cli -p "$PORT" SET demo:greeting "'hello through attache'"
expect='^hello through attache$' show redis-cli -p "$PORT" GET demo:greeting
expect='^hello through attache$' show redis-cli -p "$UPSTREAM_PORT" GET demo:greeting \
    "  # straight from the upstream: the SET went through"

step "RESP3: HELLO 3 (attache answers in the protocol the client asked for)"
expect='proto' show redis-cli -3 -p "$PORT" HELLO 3

step "MULTI/EXEC on one connection (attache pins it to a dedicated upstream connection)"
expect='^2$' show "printf 'MULTI\nINCR demo:counter\nINCR demo:counter\nEXEC\n' | redis-cli -p $PORT"

step "INFO server (the upstream's answer, through attache)"
expect='redis_version' show "redis-cli -p $PORT INFO server | head -n 8"

step "connection state: CLIENT SETNAME / CLIENT GETNAME on one connection"
expect='^demo-app$' show "printf 'CLIENT SETNAME demo-app\nCLIENT GETNAME\n' | redis-cli -p $PORT"

FINISHED=1
step "done"
cat <<EOF
What happened:
  - redis-server (pid $REDIS_PID) serves 127.0.0.1:$UPSTREAM_PORT   log: $WORK/redis-server.log
  - attache      (pid $ATTACHE_PID) serves 127.0.0.1:$PORT   log: $WORK/attache.log
    config: $WORK/attache.toml
  - redis-cli spoke plain Redis to attache on $PORT; attache carried each
    command to the upstream over its own connections.
EOF
if [[ -n $KEEP ]]; then
    cat <<EOF

Both are still running (--keep). Try:
  redis-cli -p $PORT
Stop them with:
  kill $ATTACHE_PID $REDIS_PID && rm -rf $WORK
EOF
fi
